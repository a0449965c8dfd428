// The diagnosis page: every number comes from the public V2 API; names and texts from the config
// block the server renders into index.html (cassava.server.webui). All URLs are relative so the page
// also works behind a path prefix (an ingress's /seldon/NAMESPACE/cassava/).
"use strict";

const config = JSON.parse(document.getElementById("cassava-config").textContent);
const modelPath = "v2/models/" + encodeURIComponent(config.model);
const queue = [];
let running = 0;
let done = 0;
let total = 0;

const metadata = fetch(modelPath, { headers: { accept: "application/json" } })
  .then((response) => (response.ok ? response.json() : {}))
  .catch(() => ({}))
  .then((meta) => {
    const params = meta.parameters || {};
    const warning = params.untrained ? params.warning || "This server runs an untrained stand-in model: its answers mean nothing." : "";
    const banner = document.getElementById("standin");
    banner.textContent = warning;
    banner.hidden = !warning;
    return warning;
  });

function setStatus() {
  document.getElementById("status").textContent =
    total === 0 ? "" : `${done} of ${total} photo${total === 1 ? "" : "s"} done` + (done < total ? "…" : ".");
}

// Photos larger than config.maxSide are redrawn at that size as JPEG: a phone photo then crosses a slow
// link in tens of kilobytes instead of megabytes. Smaller photos, and files this browser cannot decode,
// are sent unchanged so the server judges exactly what was chosen.
async function prepare(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return file;
  }
  const scale = config.maxSide / Math.max(bitmap.width, bitmap.height);
  if (scale >= 1) {
    bitmap.close();
    return file;
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return new Promise((resolve) =>
    canvas.toBlob((blob) => resolve(blob || file), "image/jpeg", config.jpegQuality),
  );
}

function base64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

class ServerError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function infer(blob) {
  const body = JSON.stringify({
    inputs: [{ name: config.input, datatype: config.datatype, shape: [1], data: [await base64(blob)] }],
  });
  let response;
  try {
    response = await fetch(modelPath + "/infer", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body,
    });
  } catch {
    throw new ServerError(0, "");
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new ServerError(response.status, answer.error || response.statusText);
  const outputs = Object.fromEntries(answer.outputs.map((output) => [output.name, output.data]));
  return { code: outputs[config.outputs.code][0], probabilities: outputs[config.outputs.probabilities] };
}

// What each error means to someone holding a phone, and what to do about it.
function explain(status) {
  if (status === 400) return ["The server could not use this file", "Choose a JPEG or PNG photo of a cassava leaf.", false];
  if (status === 413) return ["This photo is too large for the server", "Take it at a lower resolution, or crop it, then choose it again.", false];
  if (status === 408) return ["The upload took too long", "The connection is slow: press Retry, or send fewer photos at once.", true];
  if (status === 503) return ["The server is restarting", "Wait a few seconds, then press Retry.", true];
  if (status === -1) return ["The page could not read the server's answer", "Press Retry; if it fails again, tell whoever runs the server.", true];
  if (status === 0) return ["The server cannot be reached", "Check the connection to the server, then press Retry.", true];
  return [`The server answered with error ${status}`, "Press Retry; if it fails again, tell whoever runs the server.", true];
}

function showResult(card, result, warning) {
  const top = result.probabilities.indexOf(Math.max(...result.probabilities));
  const label = config.labels.find((entry) => entry.code === result.code) || config.labels[top];
  const confidence = result.probabilities[top];
  const uncertain = result.code === config.unknownCode || confidence < config.uncertainBelow;
  card.dataset.classCode = result.code;
  card.classList.toggle("uncertain", uncertain);
  card.querySelector(".verdict").textContent = uncertain ? config.uncertainText : label.name;
  card.querySelector(".about").textContent = uncertain
    ? `The model is not sure (best ${percent(confidence)}). Photograph one leaf, close and sharp, in daylight.`
    : `${percent(confidence)} confident. ${label.description}`;
  const bars = card.querySelector(".bars");
  config.labels.forEach((entry, index) => {
    const row = document.createElement("li");
    row.className = index === top ? "top" : "";
    row.dataset.code = entry.code;
    const name = document.createElement("span");
    name.textContent = entry.name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${(result.probabilities[index] * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = percent(result.probabilities[index]);
    row.append(name, track, value);
    bars.append(row);
  });
  const note = card.querySelector(".standin-note");
  note.textContent = warning ? "Untrained stand-in model: this result means nothing." : "";
  note.hidden = !warning;
}

function showError(card, error, retry) {
  const [title, advice, retryable] = explain(error.status);
  card.classList.add("failed");
  card.dataset.status = String(error.status);
  card.querySelector(".verdict").textContent = title;
  const text = card.querySelector(".error");
  text.textContent = (error.message ? `${error.message}. ` : "") + advice;
  text.hidden = false;
  const button = card.querySelector(".retry");
  button.hidden = !retryable;
  button.onclick = () => {
    button.hidden = true;
    text.hidden = true;
    card.classList.remove("failed");
    card.querySelector(".verdict").textContent = "Sending again…";
    done -= 1;
    enqueue(retry);
  };
}

function percent(p) {
  return `${Math.round(p * 100)}%`;
}

function addPhoto(file) {
  const card = document.getElementById("result").content.firstElementChild.cloneNode(true);
  card.querySelector(".file").textContent = file.name;
  card.querySelector(".verdict").textContent = "Waiting…";
  document.getElementById("results").append(card);
  const job = async () => {
    card.querySelector(".verdict").textContent = "Diagnosing…";
    const blob = await prepare(file);
    const preview = card.querySelector(".preview");
    if (!preview.src) {
      preview.src = URL.createObjectURL(blob);
      preview.alt = `Photo ${file.name}`;
      preview.onerror = () => (preview.hidden = true);
    }
    try {
      const result = await infer(blob);
      showResult(card, result, await metadata);
    } catch (error) {
      showError(card, error instanceof ServerError ? error : new ServerError(-1, String(error)), job);
    }
  };
  total += 1;
  enqueue(job);
}

// A few requests at a time: twenty photos neither open twenty connections nor hold twenty decoded
// 12 MP bitmaps at once.
function enqueue(job) {
  queue.push(job);
  setStatus();
  pump();
}

function pump() {
  while (running < config.concurrentUploads && queue.length) {
    const job = queue.shift();
    running += 1;
    job()
      .catch((error) => console.error(error))
      .finally(() => {
        running -= 1;
        done += 1;
        setStatus();
        pump();
      });
  }
}

function addFiles(files) {
  for (const file of files) addPhoto(file);
}

for (const id of ["photos", "camera"]) {
  const input = document.getElementById(id);
  input.addEventListener("change", () => {
    addFiles(input.files);
    input.value = "";
  });
}

const drop = document.getElementById("drop");
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
document.addEventListener("dragleave", () => drop.classList.remove("over"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  addFiles(event.dataTransfer.files);
});
