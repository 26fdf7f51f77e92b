// The playground: pick or record audio, ask, and watch the thinking and the answer stream from
// /v1/chat/completions (Server-Sent Events); with "speak the answer", each spoken sentence (a WAV chunk) is
// played as it arrives. Recordings are turned into 16 kHz mono WAV here, so the server gets a format it decodes.
"use strict";

const $ = (id) => document.getElementById(id);
let audio = null;          // {data: base64, format: "wav" | "mp3" | "flac" | "ogg"} or null
let modelName = null;
let controller = null;     // AbortController of the request in flight
let recorder = null;
const playQueue = [];
let playing = false;

$("api-key").value = localStorage.getItem("mgrd-api-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("mgrd-api-key", $("api-key").value));

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("api-key").value) h["Authorization"] = "Bearer " + $("api-key").value;
  return h;
}

async function loadModel() {
  const r = await fetch("/v1/models", { headers: headers() });
  if (!r.ok) { $("status").textContent = "models: " + (await errorText(r)); return; }
  modelName = (await r.json()).data[0].id;
  $("model-name").textContent = modelName;
}

async function errorText(r) {
  try { return (await r.json()).error.message; } catch (e) { return r.status + " " + r.statusText; }
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

$("audio-file").addEventListener("change", async () => {
  const file = $("audio-file").files[0];
  if (!file) { audio = null; $("audio-status").textContent = "no audio"; return; }
  const ext = file.name.split(".").pop().toLowerCase();
  if (["wav", "mp3", "flac", "ogg"].includes(ext)) {
    audio = { data: base64(new Uint8Array(await file.arrayBuffer())), format: ext };
  } else {
    audio = { data: base64(await toWav(await file.arrayBuffer())), format: "wav" };
  }
  $("audio-status").textContent = file.name;
});

// Any audio the browser decodes -> 16 kHz mono 16-bit WAV bytes.
async function toWav(buffer) {
  const decoded = await new AudioContext().decodeAudioData(buffer);
  const frames = Math.ceil(decoded.duration * 16000);
  const offline = new OfflineAudioContext(1, frames, 16000);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const out = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (o, s) => [...s].forEach((c, i) => out.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF"); out.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVEfmt ");
  out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, 1, true);
  out.setUint32(24, 16000, true); out.setUint32(28, 32000, true); out.setUint16(32, 2, true);
  out.setUint16(34, 16, true); text(36, "data"); out.setUint32(40, 2 * samples.length, true);
  samples.forEach((x, i) => out.setInt16(44 + 2 * i, Math.max(-1, Math.min(1, x)) * 32767, true));
  return new Uint8Array(out.buffer);
}

$("record").addEventListener("click", async () => {
  if (recorder) { recorder.stop(); return; }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const parts = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => parts.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    recorder = null;
    $("record").textContent = "● Record";
    audio = { data: base64(await toWav(await new Blob(parts).arrayBuffer())), format: "wav" };
    $("audio-status").textContent = "recording";
  };
  recorder.start();
  $("record").textContent = "■ Stop recording";
});

function enqueueSpeech(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const el = new Audio(URL.createObjectURL(new Blob([bytes], { type: "audio/wav" })));
  el.controls = true;
  $("speech").appendChild(el);
  $("speech").dataset.chunks = String(Number($("speech").dataset.chunks) + 1);
  playQueue.push(el);
  playNext();
}

function playNext() {
  if (playing || !playQueue.length) return;
  const el = playQueue.shift();
  playing = true;
  el.onended = el.onerror = () => { playing = false; playNext(); };
  el.play().catch(() => { playing = false; playNext(); });
}

$("stop").addEventListener("click", () => controller && controller.abort());

$("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!modelName) await loadModel();
  const content = [];
  if ($("question").value) content.push({ type: "text", text: $("question").value });
  if (audio) content.push({ type: "input_audio", input_audio: audio });
  if (!content.length) { $("status").textContent = "give audio and/or a question"; return; }
  const body = {
    model: modelName, stream: true, stream_options: { include_usage: true },
    temperature: Number($("temperature").value), messages: [{ role: "user", content }],
  };
  if ($("max-tokens").value) body.max_tokens = Number($("max-tokens").value);  // else what the context leaves
  if ($("speak").checked) { body.modalities = ["text", "audio"]; body.audio = { voice: "alloy", format: "wav" }; }
  $("reasoning").textContent = ""; $("answer").textContent = ""; $("status").textContent = "";
  $("usage").textContent = ""; delete $("status").dataset.done;
  $("speech").replaceChildren(); $("speech").dataset.chunks = "0"; $("thinking").open = true;
  $("send").disabled = true; $("stop").disabled = false;
  controller = new AbortController();
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!r.ok) { $("status").textContent = await errorText(r); return; }
    await readEvents(r.body.getReader());
  } catch (e) {
    if (e.name !== "AbortError") $("status").textContent = String(e);
  } finally {
    $("send").disabled = false; $("stop").disabled = true; controller = null;
  }
});

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      if (!event.startsWith("data: ")) continue;
      const payload = event.slice(6);
      if (payload === "[DONE]") { $("status").dataset.done = "1"; return; }
      handle(JSON.parse(payload));
    }
  }
}

function handle(doc) {
  if (doc.error) { $("status").textContent = doc.error.message; return; }
  if (doc.usage) {
    $("usage").dataset.promptTokens = doc.usage.prompt_tokens;
    $("usage").textContent = `${doc.usage.prompt_tokens} prompt + ${doc.usage.completion_tokens} completion tokens`;
  }
  for (const choice of doc.choices || []) {
    const d = choice.delta || {};
    if (d.reasoning_content) $("reasoning").textContent += d.reasoning_content;
    if (d.content) { $("answer").textContent += d.content; $("thinking").open = false; }
    if (d.audio && d.audio.data) enqueueSpeech(d.audio.data);
  }
}

loadModel();
