// The playground: chat (streamed with fetch, since EventSource cannot POST), text-to-image and sentence
// similarity, each calling the same API routes any client calls, with this page's session and CSRF token; and
// the code that makes the same request from curl, huggingface_hub and openai.
"use strict";
(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const csrf = $('meta[name="csrf-token"]').content;
  const origin = location.origin;
  const panes = [{ el: $("#pane-a"), history: [] }, { el: $("#pane-b"), history: [] }];
  let controllers = [];
  let snippetKind = "curl";

  const model = () => $("#model").value;
  const task = () => $("#model").selectedOptions[0]?.dataset.task || "";
  const mode = () => task() === "text-generation" ? "chat" : task() === "text-to-image" ? "image"
    : (task() === "feature-extraction" || task() === "sentence-similarity") ? "embed" : "task";
  // The hub's other tasks: an example each, in the shape POST /models/{id} and InferenceClient take.
  const TASK_EXAMPLES = {
    "fill-mask": ["Paris is the [MASK] of France.", { top_k: 3 }],
    "text-classification": ["I like you. I love you.", {}],
    "token-classification": ["My name is Sarah and I live in London.", { aggregation_strategy: "simple" }],
    "zero-shot-classification": ["I loved this movie.", { candidate_labels: ["good", "bad"] }],
    "question-answering": [{ question: "Where do I live?", context: "My name is Sarah and I live in London." }, {}],
    "summarization": ["The tower is 324 metres tall, about the same height as an 81-storey building.", {}],
    "translation": ["My name is Sarah and I live in London.", {}],
    "text2text-generation": ["Paraphrase: the weather is sunny today.", {}],
  };
  const number = (id) => { const v = $(id).value; return v === "" ? undefined : Number(v); };
  const headers = () => ({ "Content-Type": "application/json", "X-CSRF-Token": csrf });

  function showError(message) {
    const el = $("#error");
    el.textContent = message;
    el.hidden = !message;
  }

  async function errorText(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      const e = body.error;
      return `${response.status}: ${typeof e === "string" ? e : (e && e.message) || body.message || text}`;
    } catch { return `${response.status}: ${text}`; }
  }

  // -- chat ----------------------------------------------------------------------------------------------
  function generation() {
    const p = { max_tokens: number("#max_tokens"), temperature: number("#temperature"), top_p: number("#top_p") };
    const seed = number("#seed");
    if (seed !== undefined) p.seed = seed;
    return p;
  }

  function conversation(pane, text) {
    const system = $("#system").value.trim();
    return [...(system ? [{ role: "system", content: system }] : []), ...pane.history, { role: "user", content: text }];
  }

  function addMessage(pane, role, text) {
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    div.textContent = text;
    $(".transcript", pane.el).append(div);
    return div;
  }

  async function streamChat(pane, modelId, messages, signal) {
    const out = addMessage(pane, "assistant", "");
    out.classList.add("streaming");
    const stats = $(".stats", pane.el);
    const started = performance.now();
    let first = null, pieces = 0, usage = null, finish = null;
    const show = (waiting = false) => {
      if (waiting) { stats.textContent = "waiting for the first token (a model not loaded yet loads first)…"; return; }
      const secs = first === null ? 0 : (performance.now() - first) / 1000;
      const tokens = usage ? usage.completion_tokens : pieces;
      stats.textContent = `${tokens} tokens` + (first === null ? "" :
        ` · first token ${Math.round(first - started)} ms · ${secs > 0 ? (tokens / secs).toFixed(1) : "–"} tokens/s`) +
        (finish ? ` · ${finish}` : "");
    };
    show(true);
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), signal,
        body: JSON.stringify({ model: modelId, messages, stream: true, stream_options: { include_usage: true }, ...generation() }),
      });
      if (!response.ok) throw new Error(await errorText(response));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message || String(chunk.error));
            if (chunk.usage) usage = chunk.usage;
            const choice = chunk.choices && chunk.choices[0];
            if (choice && choice.finish_reason) finish = choice.finish_reason;
            const delta = choice && choice.delta && choice.delta.content;
            if (delta) {
              if (first === null) first = performance.now();
              pieces += 1;
              out.textContent += delta;
            }
          }
          show();
        }
      }
    } catch (error) {
      if (error.name === "AbortError") out.classList.add("stopped");  // the partial answer stays
      else showError(error.message);
    } finally {
      out.classList.remove("streaming");
      show();
    }
    pane.history.push({ role: "assistant", content: out.textContent });
  }

  async function send(event) {
    event.preventDefault();
    const text = $("#prompt").value.trim();
    if (!text) return;
    showError("");
    const models = [model(), $("#model-b").value].filter(Boolean);
    const active = panes.slice(0, models.length);
    $("#send").disabled = true;
    $("#stop").disabled = false;
    controllers = active.map(() => new AbortController());
    const runs = active.map((pane, i) => {
      const messages = conversation(pane, text);
      pane.history.push({ role: "user", content: text });
      addMessage(pane, "user", text);
      return streamChat(pane, models[i], messages, controllers[i].signal);
    });
    $("#prompt").value = "";
    await Promise.all(runs);
    controllers = [];
    $("#send").disabled = false;
    $("#stop").disabled = true;
    renderSnippet();
  }

  function stop() {
    for (const c of controllers) c.abort();  // the server sees the client leave and frees the sequence
  }

  function clear() {
    for (const pane of panes) { pane.history = []; $(".transcript", pane.el).replaceChildren(); $(".stats", pane.el).textContent = ""; }
    renderSnippet();
  }

  // -- image and similarity -----------------------------------------------------------------------------
  function imageParameters() {
    const p = {};
    for (const id of ["width", "height", "num_inference_steps", "guidance_scale"]) {
      const v = number("#" + id); if (v !== undefined) p[id] = v;
    }
    const negative = $("#negative_prompt").value.trim();
    if (negative) p.negative_prompt = negative;
    const seed = number("#image_seed"); if (seed !== undefined) p.seed = seed;
    return p;
  }

  async function draw(event) {
    event.preventDefault();
    showError("");
    $("#draw").disabled = true;
    const started = performance.now();
    try {
      const response = await fetch(`/models/${model()}`, {
        method: "POST", headers: headers(),
        body: JSON.stringify({ inputs: $("#image-prompt").value, parameters: imageParameters() }),
      });
      if (!response.ok) throw new Error(await errorText(response));
      const img = $("#image");
      img.src = URL.createObjectURL(await response.blob());
      img.hidden = false;
      $("#image-stats").textContent = `${Math.round(performance.now() - started)} ms · ${response.headers.get("content-type")}`;
    } catch (error) { showError(error.message); }
    $("#draw").disabled = false;
  }

  const similarityInputs = () => ({
    source_sentence: $("#source").value,
    sentences: $("#sentences").value.split("\n").map((s) => s.trim()).filter(Boolean),
  });

  async function compare(event) {
    event.preventDefault();
    showError("");
    try {
      const inputs = similarityInputs();
      const response = await fetch(`/models/${model()}`, { method: "POST", headers: headers(), body: JSON.stringify({ inputs }) });
      if (!response.ok) throw new Error(await errorText(response));
      const scores = await response.json();
      $("#scores").replaceChildren(...inputs.sentences.map((sentence, i) => {
        const li = document.createElement("li");
        const bar = document.createElement("span");
        bar.className = "score-bar";
        bar.style.width = `${Math.max(0, scores[i]) * 200}px`;
        li.append(bar, `${scores[i].toFixed(3)} ${sentence}`);
        li.dataset.score = scores[i];
        return li;
      }));
    } catch (error) { showError(error.message); }
  }

  function taskRequest() {
    const raw = $("#task-inputs").value.trim();
    let inputs = raw;
    if (raw.startsWith("{") || raw.startsWith("[")) {
      try { inputs = JSON.parse(raw); } catch { /* plain text that starts with a bracket */ }
    }
    let parameters = {};
    try { parameters = JSON.parse($("#task-parameters").value || "{}"); } catch { throw new Error("parameters must be JSON, such as {\"top_k\": 3}"); }
    return { inputs, parameters };
  }

  async function runTask(event) {
    event.preventDefault();
    showError("");
    try {
      const body = taskRequest();
      const response = await fetch(`/models/${model()}`, { method: "POST", headers: headers(), body: JSON.stringify(body) });
      if (!response.ok) throw new Error(await errorText(response));
      $("#task-output").textContent = JSON.stringify(await response.json(), null, 2);
    } catch (error) { showError(error.message); }
  }

  function exampleTask() {
    const [inputs, parameters] = TASK_EXAMPLES[task()] || ["Hello!", {}];
    $("#task-inputs").value = typeof inputs === "string" ? inputs : JSON.stringify(inputs);
    $("#task-parameters").value = JSON.stringify(parameters);
    $("#task-output").textContent = "";
  }

  // -- snippets ------------------------------------------------------------------------------------------
  const py = (v, indent = "") => {
    if (v === null || v === undefined) return "None";
    if (v === true) return "True";
    if (v === false) return "False";
    if (typeof v === "number") return String(v);
    if (typeof v === "string") return JSON.stringify(v);
    const inner = indent + "    ";
    if (Array.isArray(v)) return v.length ? `[\n${v.map((x) => inner + py(x, inner)).join(",\n")},\n${indent}]` : "[]";
    return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${py(x, indent)}`).join(", ")}}`;
  };
  const kwargs = (obj, indent) => Object.entries(obj).map(([k, v]) => `${indent}${k}=${py(v, indent)},`).join("\n");
  const shell = (s) => `'${s.replace(/'/g, "'\\''")}'`;

  function snippet(kind) {
    const id = model();
    if (mode() === "image") {
      const body = { inputs: $("#image-prompt").value || "A misty beach at night", parameters: imageParameters() };
      if (kind === "curl") return `curl ${origin}/models/${id} \\\n    -H "Authorization: Bearer ig_..." \\\n    -H "Content-Type: application/json" \\\n    -d ${shell(JSON.stringify(body))} \\\n    --output image.png`;
      if (kind === "hub") return `from huggingface_hub import InferenceClient\n\nclient = InferenceClient(model="${origin}/models/${id}", token="ig_...")\nimage = client.text_to_image(\n    ${py(body.inputs)},\n${kwargs(body.parameters, "    ")}\n)\nimage.save("image.png")`;
      return "# The openai client has no call for this server's text-to-image: use curl or InferenceClient.";
    }
    if (mode() === "embed") {
      const inputs = similarityInputs();
      if (kind === "curl") return `curl ${origin}/models/${id} \\\n    -H "Authorization: Bearer ig_..." \\\n    -H "Content-Type: application/json" \\\n    -d ${shell(JSON.stringify({ inputs }))}`;
      if (kind === "hub") return `from huggingface_hub import InferenceClient\n\nclient = InferenceClient(model="${origin}/models/${id}", token="ig_...")\nprint(client.sentence_similarity(\n    ${py(inputs.source_sentence)},\n    other_sentences=${py(inputs.sentences, "    ")},\n))`;
      return `from openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key="ig_...")\nresult = client.embeddings.create(model="${id}", input=${py([inputs.source_sentence, ...inputs.sentences])})\nprint([len(d.embedding) for d in result.data])`;
    }
    if (mode() === "task") {
      let body;
      try { body = taskRequest(); } catch (error) { return `# ${error.message}`; }
      if (kind === "curl") return `curl ${origin}/models/${id} \\\n    -H "Authorization: Bearer ig_..." \\\n    -H "Content-Type: application/json" \\\n    -d ${shell(JSON.stringify(body))}`;
      if (kind === "openai") return "# The openai client has no call for this task: use curl or InferenceClient.";
      if (task() === "text2text-generation") return "# InferenceClient has no method for text2text-generation: use curl.";
      const args = typeof body.inputs === "string" ? `    ${py(body.inputs)},\n` : kwargs(body.inputs, "    ") + "\n";
      return `from huggingface_hub import InferenceClient\n\nclient = InferenceClient(model="${origin}/models/${id}", token="ig_...")\nprint(client.${task().replace(/-/g, "_")}(\n${args}${kwargs(body.parameters, "    ")}\n))`;
    }
    const messages = conversation(panes[0], $("#prompt").value.trim() || "Hello!");
    const params = generation();
    if (kind === "curl") return `curl ${origin}/v1/chat/completions \\\n    -H "Authorization: Bearer ig_..." \\\n    -H "Content-Type: application/json" \\\n    -d ${shell(JSON.stringify({ model: id, messages, ...params, stream: true }))}`;
    if (kind === "hub") return `from huggingface_hub import InferenceClient\n\nclient = InferenceClient(model="${origin}/models/${id}", token="ig_...")\nstream = client.chat_completion(\n    messages=${py(messages, "    ")},\n${kwargs(params, "    ")}\n    stream=True,\n)\nfor chunk in stream:\n    print(chunk.choices[0].delta.content or "", end="")\nprint()`;
    return `from openai import OpenAI\n\nclient = OpenAI(base_url="${origin}/v1", api_key="ig_...")\nstream = client.chat.completions.create(\n    model="${id}",\n    messages=${py(messages, "    ")},\n${kwargs(params, "    ")}\n    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or "", end="")\nprint()`;
  }

  function renderSnippet() {
    $("#snippet").textContent = snippet(snippetKind);
    for (const tab of document.querySelectorAll("[data-snippet]")) tab.setAttribute("aria-selected", String(tab.dataset.snippet === snippetKind));
  }

  function showMode() {
    const m = mode();
    for (const el of document.querySelectorAll(".for-chat")) el.hidden = m !== "chat";
    for (const el of document.querySelectorAll(".for-image")) el.hidden = m !== "image";
    for (const el of document.querySelectorAll(".for-embed")) el.hidden = m !== "embed";
    for (const el of document.querySelectorAll(".for-task")) el.hidden = m !== "task";
    $("#model-task").textContent = task();
    $("#pane-b").hidden = !$("#model-b").value;
    $(".pane-model", panes[0].el).textContent = model();
    $(".pane-model", panes[1].el).textContent = $("#model-b").value;
    renderSnippet();
  }

  $("#chat-form").addEventListener("submit", send);
  $("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("#chat-form").requestSubmit(); } });
  $("#stop").addEventListener("click", stop);
  $("#clear").addEventListener("click", clear);
  $("#image-form").addEventListener("submit", draw);
  $("#embed-form").addEventListener("submit", compare);
  $("#task-form").addEventListener("submit", runTask);
  $("#model").addEventListener("change", () => { clear(); if (mode() === "task") exampleTask(); showMode(); });
  $("#model-b").addEventListener("change", () => { clear(); showMode(); });
  document.addEventListener("input", renderSnippet);
  for (const tab of document.querySelectorAll("[data-snippet]")) tab.addEventListener("click", () => { snippetKind = tab.dataset.snippet; renderSnippet(); });
  const wanted = new URLSearchParams(location.search).get("model");  // a link can open a model
  if (wanted && [...$("#model").options].some((o) => o.value === wanted && !o.disabled)) $("#model").value = wanted;
  if (mode() === "task") exampleTask();
  showMode();
})();
