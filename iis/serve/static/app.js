// iis demo: plain JavaScript, no build step, no network but this server.
// Every change of the clicks (or of the threshold, on release) sends the whole click list to POST /predict
// (the stateless replay); the answer's mask is drawn over the image. While the threshold slider moves,
// the overlay is previewed from the probability map the server returned.
"use strict";

const $ = (id) => document.getElementById(id);
const imageCanvas = $("image"), overlay = $("overlay");
const ictx = imageCanvas.getContext("2d"), octx = overlay.getContext("2d");

const S = {                 // the demo's state; window.iisDemo for tests and the curious
  state: "loading",         // loading | idle | busy | ready | error
  method: null, defaultThreshold: 0.5, threshold: 0.5, positive: true,
  name: "image", imageB64: null, width: 0, height: 0,
  clicks: [],               // {x, y, positive} in image pixels
  version: 0,               // bumped by every change that needs a new prediction
  inflight: false, last: null, lastMs: null,
  mask: null, prob: null,   // Uint8 arrays (H*W) of the last answer
  error: null, requests: 0,
};
window.iisDemo = S;

function setState(state, message, isError) {
  S.state = state;
  document.body.dataset.state = state;
  const st = $("status");
  st.textContent = message || "";
  st.classList.toggle("error", !!isError);
  $("undo").disabled = S.clicks.length === 0;
  $("reset").disabled = S.clicks.length === 0;
  $("download").classList.toggle("disabled", !S.last);
}

function describe() {
  if (!S.last) return `${S.width}x${S.height} · click on an object`;
  const n = S.clicks.length;
  return `${S.method} · ${n} click${n === 1 ? "" : "s"} · mask ${S.last.area} px · ` +
         `${Math.round(S.lastMs)} ms (server ${Math.round(S.last.latency_ms)} ms)`;
}

// ---------------------------------------------------------------- images
function loadDataURL(dataURL, name) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      S.width = img.naturalWidth; S.height = img.naturalHeight;
      for (const c of [imageCanvas, overlay]) { c.width = S.width; c.height = S.height; }
      ictx.drawImage(img, 0, 0);
      S.imageB64 = dataURL.slice(dataURL.indexOf(",") + 1);
      S.name = (name || "image").replace(/\.[^.]+$/, "");
      S.clicks = []; S.last = null; S.mask = S.prob = null; S.version++;
      draw();
      setState("idle", describe());
      resolve();
    };
    img.onerror = () => { setState("error", `${name}: the browser cannot read this image`, true); reject(); };
    img.src = dataURL;
  });
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function loadSample() {
  const blob = await (await fetch("/static/sample.png")).blob();
  await loadDataURL(await readFile(blob), "sample.png");
}

function decodePNG(b64) {  // -> Uint8ClampedArray of the gray values (H*W)
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      const x = c.getContext("2d");
      x.drawImage(img, 0, 0);
      const rgba = x.getImageData(0, 0, c.width, c.height).data;
      const out = new Uint8ClampedArray(c.width * c.height);
      for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
      resolve(out);
    };
    img.onerror = () => reject(new Error("the server's PNG could not be decoded"));
    img.src = "data:image/png;base64," + b64;
  });
}

// ---------------------------------------------------------------- drawing
function draw(mask) {
  mask = mask || S.mask;
  const W = S.width, H = S.height;
  octx.clearRect(0, 0, W, H);
  if (mask) {
    const im = octx.createImageData(W, H), d = im.data;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = y * W + x;
        if (!mask[i]) continue;
        const edge = x === 0 || y === 0 || x === W - 1 || y === H - 1 ||
          !mask[i - 1] || !mask[i + 1] || !mask[i - W] || !mask[i + W];
        d[4 * i] = edge ? 255 : 0; d[4 * i + 1] = edge ? 255 : 170; d[4 * i + 2] = edge ? 255 : 255;
        d[4 * i + 3] = edge ? 255 : 150;
      }
    }
    octx.putImageData(im, 0, 0);
  }
  const r = Math.max(4, Math.round(Math.min(W, H) / 90));
  for (const c of S.clicks) {
    octx.beginPath();
    octx.arc(c.x, c.y, r, 0, 2 * Math.PI);
    octx.fillStyle = c.positive ? "#2ecc71" : "#ff5a5f";
    octx.fill();
    octx.lineWidth = Math.max(1.5, r / 3);
    octx.strokeStyle = "#ffffff";
    octx.stroke();
  }
}

function thresholded(t) {  // preview: the mask the probability map gives at threshold t
  const out = new Uint8Array(S.prob.length), cut = t * 255;
  for (let i = 0; i < out.length; i++) out[i] = S.prob[i] > cut ? 1 : 0;
  return out;
}

// ---------------------------------------------------------------- prediction
async function predict() {
  if (S.inflight) return;           // the answer handler sends again if the clicks changed meanwhile
  if (!S.clicks.length) { S.last = null; S.mask = S.prob = null; draw(); setState("idle", describe()); return; }
  const version = S.version, t0 = performance.now();
  S.inflight = true; S.requests++;
  setState("busy", `${S.method}: predicting with ${S.clicks.length} click${S.clicks.length === 1 ? "" : "s"}…`);
  try {
    const res = await fetch("/predict", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({image: S.imageB64, clicks: S.clicks.map((c) => [c.x, c.y, c.positive]),
                            threshold: S.threshold, return_prob: true}),
    });
    const body = await res.json();
    if (!res.ok) throw new Error(`${res.status}: ${body.error || res.statusText}`);
    if (version === S.version) {
      const [mask, prob] = await Promise.all([decodePNG(body.mask), decodePNG(body.prob)]);
      S.mask = mask.map((v) => (v > 127 ? 1 : 0)); S.prob = prob;
      S.last = body; S.lastMs = performance.now() - t0; S.error = null;
      $("download").href = "data:image/png;base64," + body.mask;
      $("download").download = `${S.name}_mask.png`;
      draw();
      setState("ready", describe());
    }
  } catch (e) {
    S.error = String(e.message || e);
    setState("error", S.error, true);
  } finally {
    S.inflight = false;
  }
  if (version !== S.version && S.state !== "error") predict();
}

function addClick(ev, positive) {
  if (!S.imageB64) return;
  const r = overlay.getBoundingClientRect();
  const x = Math.min(S.width - 1, Math.max(0, (ev.clientX - r.left) * S.width / r.width));
  const y = Math.min(S.height - 1, Math.max(0, (ev.clientY - r.top) * S.height / r.height));
  S.clicks.push({x: Math.round(x * 100) / 100, y: Math.round(y * 100) / 100, positive});
  S.version++;
  draw(S.mask);
  predict();
}

function undo() {
  if (!S.clicks.length) return;
  S.clicks.pop(); S.version++; draw(); predict();
}

function reset() {
  S.clicks = []; S.version++; predict();
}

function setMode(positive) {
  S.positive = positive;
  $("mode-pos").classList.toggle("on", positive);
  $("mode-neg").classList.toggle("on", !positive);
}

// ---------------------------------------------------------------- wiring
overlay.addEventListener("click", (ev) => addClick(ev, ev.shiftKey ? !S.positive : S.positive));
overlay.addEventListener("contextmenu", (ev) => { ev.preventDefault(); addClick(ev, false); });
$("mode-pos").addEventListener("click", () => setMode(true));
$("mode-neg").addEventListener("click", () => setMode(false));
$("undo").addEventListener("click", undo);
$("reset").addEventListener("click", reset);
$("sample").addEventListener("click", () => loadSample().catch(() => {}));
$("file").addEventListener("change", async (ev) => {
  const f = ev.target.files[0];
  if (f) await loadDataURL(await readFile(f), f.name).catch(() => {});
  ev.target.value = "";
});
$("threshold").addEventListener("input", (ev) => {
  const t = Number(ev.target.value);
  $("thr-value").textContent = t.toFixed(2);
  if (S.prob) draw(thresholded(t));
});
$("threshold").addEventListener("change", (ev) => {
  S.threshold = Number(ev.target.value); S.version++;
  if (S.clicks.length) predict();
});
document.addEventListener("keydown", (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); }
});

(async function init() {
  try {
    const h = await (await fetch("/health")).json();
    S.method = h.method; S.defaultThreshold = S.threshold = h.threshold;
    $("method").textContent = `method: ${h.method}${h.note ? " (" + h.note + ")" : ""}`;
    $("threshold").value = h.threshold;
    $("thr-value").textContent = Number(h.threshold).toFixed(2);
    await loadSample();
  } catch (e) {
    setState("error", `could not reach the server: ${e.message || e}`, true);
  }
})();
