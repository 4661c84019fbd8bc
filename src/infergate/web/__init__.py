"""The web pages: sign-in (API token or the identity provider), the playground, the account page, the admin
pages. Server-rendered Jinja2 templates with htmx (vendored) for forms and tables, and a little plain JavaScript
for the playground's streamed chat, which calls the same API as every other client, with the signed-in user's
session and its CSRF token. Nothing here is built with Node, and nothing is fetched from another host."""
