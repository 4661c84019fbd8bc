// A real OpenID Connect provider for infergate's SSO tests: panva's certified `oidc-provider`, with its
// development login and consent pages (any login name signs in; the password is not checked).
//
//   node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
//
// or the same from OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET (empty: a public client, PKCE only) and
// OIDC_REDIRECT_URI. The issuer is http://127.0.0.1:PORT; it listens on 127.0.0.1 only. A login name is the
// account: `sub` is derived from it (stable across sign-ins), `email` is the login when it has an @ (else
// LOGIN@example.com) and `preferred_username` is the part before the @. The ID token carries those claims
// itself (conformIdTokenClaims off), as many enterprise providers do. Tests start it with
// tests/support/oidc.py.

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const [argPort, argClientId, argClientSecret, argRedirectUri] = process.argv.slice(2);
const port = Number(argPort ?? process.env.OIDC_PORT);
const clientId = argClientId ?? process.env.OIDC_CLIENT_ID ?? 'infergate';
const clientSecret = argClientSecret ?? process.env.OIDC_CLIENT_SECRET ?? '';
const redirectUri = argRedirectUri ?? process.env.OIDC_REDIRECT_URI;
if (!Number.isInteger(port) || port <= 0 || !redirectUri) {
  console.error('usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI');
  process.exit(2);
}

const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', use: 'sig', alg: 'RS256' };

function account(login) {
  const name = String(login).trim();
  const email = name.includes('@') ? name : `${name}@example.com`;
  const sub = `user-${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
  return {
    accountId: name,
    async claims() {
      return { sub, email, email_verified: true, preferred_username: email.split('@')[0], name };
    },
  };
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      ...(clientSecret ? { client_secret: clientSecret } : {}),
      token_endpoint_auth_method: clientSecret ? 'client_secret_basic' : 'none',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'name'],
  },
  conformIdTokenClaims: false,
  findAccount: (_ctx, id) => account(id),
  features: { devInteractions: { enabled: true } },
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  ttl: { Session: 3600, Interaction: 600, Grant: 3600, AuthorizationCode: 60, IdToken: 300, AccessToken: 300 },
});

provider.on('server_error', (_ctx, error) => console.error('server_error', error));

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
