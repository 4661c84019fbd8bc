// Runs one scenario of a JavaScript client users already have against an infergate server and prints what
// came back as one JSON object on stdout (tests/e2e/test_js_clients.py asserts on it).
//
//   node run.mjs SCENARIO [--url URL] [--token TOKEN] [--model ID] [--embedding-model ID] [--prompt TEXT]
//                         [--max-tokens N]
//
// Each option falls back on an environment variable (INFERGATE_URL, INFERGATE_TOKEN, INFERGATE_MODEL,
// INFERGATE_EMBEDDING_MODEL, INFERGATE_PROMPT, INFERGATE_MAX_TOKENS). The clients are called the way their
// READMEs show, pointed at the server; the only addition is a pass-through `fetch` (an option both clients
// document) that records each request's method, URL, headers and body, printed as `requests`.
// On an error the output is {"error": message, "name", "status"} and the exit status 1.

import { InferenceClient } from "@huggingface/inference";
import OpenAI from "openai";

const DEFAULTS = {
	url: "http://127.0.0.1:8000",
	token: "",
	model: "HuggingFaceTB/SmolLM2-135M-Instruct",
	"embedding-model": "sentence-transformers/all-MiniLM-L6-v2",
	prompt: "The capital of France is",
	"max-tokens": "8",
};

function parseArgs(argv) {
	const opts = {};
	for (const [key, fallback] of Object.entries(DEFAULTS)) {
		const env = `INFERGATE_${key.toUpperCase().replace("-", "_")}`;
		opts[key] = process.env[env] ?? fallback;
	}
	const positional = [];
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		if (!arg.startsWith("--")) {
			positional.push(arg);
			continue;
		}
		const key = arg.slice(2);
		if (!(key in DEFAULTS) || i + 1 >= argv.length) {
			throw new Error(`unknown option or missing value: ${arg}`);
		}
		opts[key] = argv[++i];
	}
	if (positional.length !== 1) {
		throw new Error(`give exactly one scenario: ${Object.keys(SCENARIOS).join(", ")}`);
	}
	opts.url = opts.url.replace(/\/+$/, "");
	opts.maxTokens = Number.parseInt(opts["max-tokens"], 10);
	return { scenario: positional[0], opts };
}

const requests = [];

/** The global fetch, recording what each client sends. */
async function recordingFetch(input, init = {}) {
	const headers = Object.fromEntries(new Headers(init.headers ?? (input instanceof Request ? input.headers : {})));
	if (headers.authorization) {
		headers.authorization = headers.authorization.replace(/Bearer .+/, "Bearer <token>");
	}
	let body = init.body ?? null;
	if (typeof body === "string") {
		try {
			body = JSON.parse(body);
		} catch {
			// not JSON: keep the string
		}
	}
	const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
	const entry = { method: init.method ?? "GET", url, headers, body };
	requests.push(entry);
	const response = await fetch(input, init);
	entry.status = response.status;
	return response;
}

const messages = [{ role: "user", content: "What is the capital of France? Answer in one sentence." }];

function hf(opts, model = opts.model) {
	// As huggingface.js's README shows for an Inference Endpoint: the endpoint URL is the model's URL.
	return new InferenceClient(opts.token, { fetch: recordingFetch }).endpoint(`${opts.url}/models/${model}`);
}

function openai(opts) {
	return new OpenAI({ baseURL: `${opts.url}/v1`, apiKey: opts.token, fetch: recordingFetch, maxRetries: 0 });
}

const SCENARIOS = {
	async "hf.textGeneration"(opts) {
		const out = await hf(opts).textGeneration({
			inputs: opts.prompt,
			parameters: { max_new_tokens: opts.maxTokens, do_sample: false },
		});
		return { output: out };
	},

	async "hf.textGenerationStream"(opts) {
		const chunks = [];
		for await (const chunk of hf(opts).textGenerationStream({
			inputs: opts.prompt,
			parameters: { max_new_tokens: opts.maxTokens, do_sample: false },
		})) {
			chunks.push(chunk);
		}
		// What user code written for the HF API reads: token.text per event, generated_text at the end.
		const tokens = chunks.map((c) => c.token?.text ?? null);
		const generatedText = chunks.at(-1)?.generated_text ?? null;
		return { tokens, generated_text: generatedText, chunks };
	},

	async "hf.chatCompletion"(opts) {
		const out = await hf(opts).chatCompletion({ messages, max_tokens: opts.maxTokens, temperature: 0 });
		return { content: out.choices[0].message.content, output: out };
	},

	async "hf.chatCompletion.v1"(opts) {
		// The README's "local endpoints" form: the server's /v1 URL, no model named in the call.
		const client = new InferenceClient(opts.token, { endpointUrl: `${opts.url}/v1/`, fetch: recordingFetch });
		const out = await client.chatCompletion({ messages, max_tokens: opts.maxTokens, temperature: 0 });
		return { content: out.choices[0].message.content, output: out };
	},

	async "hf.chatCompletionStream"(opts) {
		let content = "";
		const chunks = [];
		for await (const chunk of hf(opts).chatCompletionStream({
			messages,
			max_tokens: opts.maxTokens,
			temperature: 0,
		})) {
			chunks.push(chunk);
			if (chunk.choices && chunk.choices.length > 0) {
				content += chunk.choices[0].delta.content ?? "";
			}
		}
		return { content, chunks };
	},

	async "hf.featureExtraction"(opts) {
		const out = await hf(opts, opts["embedding-model"]).featureExtraction({ inputs: ["a cat", "a dog"] });
		return { output: out };
	},

	async "hf.sentenceSimilarity"(opts) {
		const out = await hf(opts, opts["embedding-model"]).sentenceSimilarity({
			inputs: { source_sentence: "a cat", sentences: ["a kitten", "a car"] },
		});
		return { output: out };
	},

	async "openai.chat"(opts) {
		const out = await openai(opts).chat.completions.create({
			model: opts.model,
			messages,
			max_tokens: opts.maxTokens,
			temperature: 0,
		});
		return { content: out.choices[0].message.content, output: out };
	},

	async "openai.chat.stream"(opts) {
		const stream = await openai(opts).chat.completions.create({
			model: opts.model,
			messages,
			max_tokens: opts.maxTokens,
			temperature: 0,
			stream: true,
			stream_options: { include_usage: true },
		});
		let content = "";
		let usage = null;
		let finishReason = null;
		for await (const chunk of stream) {
			if (chunk.choices.length > 0) {
				content += chunk.choices[0].delta.content ?? "";
				finishReason = chunk.choices[0].finish_reason ?? finishReason;
			}
			usage = chunk.usage ?? usage;
		}
		return { content, usage, finish_reason: finishReason };
	},

	async "openai.chat.tools"(opts) {
		// A required call of one tool, as the SDK's README shows tools; the arguments come as a JSON string.
		const out = await openai(opts).chat.completions.create({
			model: opts.model,
			messages: [{ role: "user", content: "What is the weather in Paris?" }],
			tools: [
				{
					type: "function",
					function: {
						name: "get_weather",
						parameters: {
							type: "object",
							properties: { city: { type: "string", maxLength: 30 } },
							required: ["city"],
							additionalProperties: false,
						},
					},
				},
			],
			tool_choice: "required",
			parallel_tool_calls: false,
			max_tokens: 100,
			temperature: 0,
		});
		return { toolCalls: out.choices[0].message.tool_calls, finish_reason: out.choices[0].finish_reason };
	},

	async "openai.chat.json"(opts) {
		const out = await openai(opts).chat.completions.create({
			model: opts.model,
			messages: [{ role: "user", content: "Describe Paris as JSON." }],
			response_format: {
				type: "json_schema",
				json_schema: {
					name: "city",
					strict: true,
					schema: {
						type: "object",
						properties: { name: { type: "string", maxLength: 30 }, big: { type: "boolean" } },
						required: ["name", "big"],
						additionalProperties: false,
					},
				},
			},
			max_tokens: 100,
			temperature: 0,
		});
		return { content: out.choices[0].message.content, finish_reason: out.choices[0].finish_reason };
	},

	async "openai.completions"(opts) {
		const out = await openai(opts).completions.create({
			model: opts.model,
			prompt: opts.prompt,
			max_tokens: opts.maxTokens,
			temperature: 0,
		});
		return { text: out.choices[0].text, output: out };
	},

	async "openai.embeddings"(opts) {
		// The client asks for base64 unless told otherwise, and decodes it back to floats.
		const out = await openai(opts).embeddings.create({
			model: opts["embedding-model"],
			input: ["a cat", "a dog"],
		});
		return { embeddings: out.data.map((d) => d.embedding), usage: out.usage, model: out.model };
	},
};

async function main() {
	const { scenario, opts } = parseArgs(process.argv.slice(2));
	const run = SCENARIOS[scenario];
	if (!run) {
		throw new Error(`unknown scenario ${scenario}; known: ${Object.keys(SCENARIOS).join(", ")}`);
	}
	const result = await run(opts);
	process.stdout.write(`${JSON.stringify({ scenario, ...result, requests })}\n`);
}

main().catch((err) => {
	const status = err?.httpResponse?.status ?? err?.status ?? null;
	process.stdout.write(`${JSON.stringify({ error: String(err?.message ?? err), name: err?.name, status, requests })}\n`);
	process.exit(1);
});
