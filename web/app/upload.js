// Sending a file's bytes straight to its upload target (never through the API),
// with upload progress from XHR.
//
//   await uploadFile(file, target, (fraction) => progress.value = fraction * 100);
//
// target is an UploadTarget: PUT (body = bytes, with `headers`), POST (multipart form:
// `fields` then the file), or multipart parts (`partUrls`, `partSize`): each byte range
// PUT to its URL, up to PART_CONCURRENCY at a time. The server lists the parts itself
// on completeUpload, so the parts' ETags are not needed. Each request is tried up to
// ATTEMPTS times (a network error, 5xx, 429), waiting a little longer each time.
import { apiUrl } from "./config.js";

// Headers a browser sets itself and refuses from scripts.
const FORBIDDEN = new Set(["content-length", "host", "connection", "expect", "accept-encoding"]);
const ATTEMPTS = 3;
const BACKOFF_MS = 500; // then 1 s, 2 s... (with jitter)
const PART_CONCURRENCY = 4;

class UploadError extends Error {
  constructor(message, { retry }) {
    super(message);
    this.name = "UploadError";
    this.retry = retry;
  }
}

function send(method, url, body, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, apiUrl(url));
    for (const { name, value } of headers || []) {
      if (!FORBIDDEN.has(name.toLowerCase())) xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr);
      else {
        const detail = (xhr.responseText || "").slice(0, 200);
        const retry = xhr.status >= 500 || xhr.status === 429;
        reject(new UploadError(`Upload refused: HTTP ${xhr.status}${detail ? ` (${detail})` : ""}`, { retry }));
      }
    };
    xhr.onerror = () =>
      reject(new UploadError("Upload failed: network error (is CORS allowed on the upload target?)", { retry: true }));
    xhr.onabort = () => reject(new UploadError("Upload aborted", { retry: false }));
    xhr.send(body);
  });
}

/** send(), tried again on a network error or a 5xx; progress restarts from 0 each try. */
async function sendWithRetry(method, url, body, headers, onProgress) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send(method, url, body, headers, onProgress);
    } catch (error) {
      if (!error.retry || attempt >= ATTEMPTS) throw error;
      onProgress(0, 1);
      const wait = BACKOFF_MS * 2 ** (attempt - 1) * (0.75 + Math.random() / 2);
      console.warn(`${error.message}: trying again in ${Math.round(wait)} ms`);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }
}

export async function uploadFile(file, target, onProgress = () => {}) {
  const total = file.size || 1;
  if (target.partUrls && target.partUrls.length) {
    const partSize = Number(target.partSize);
    const sent = new Array(target.partUrls.length).fill(0);
    const report = () => onProgress(Math.min(1, sent.reduce((a, b) => a + b, 0) / total));
    const queue = target.partUrls.map((url, i) => ({ url, i }));
    const worker = async () => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        const { url, i } = job;
        const slice = file.slice(i * partSize, Math.min(file.size, (i + 1) * partSize));
        try {
          await sendWithRetry("PUT", url, slice, target.headers, (loaded) => {
            sent[i] = Math.min(loaded, slice.size);
            report();
          });
        } catch (error) {
          queue.length = 0; // the other workers stop after their current part
          throw error;
        }
        sent[i] = slice.size;
        report();
      }
    };
    const workers = Array.from({ length: Math.min(PART_CONCURRENCY, queue.length) }, worker);
    await Promise.all(workers);
  } else if (target.method === "POST") {
    const form = new FormData();
    for (const { name, value } of target.fields || []) form.append(name, value);
    form.append("file", file);
    await sendWithRetry("POST", target.url, form, target.headers, (loaded, all) => onProgress(loaded / all));
  } else {
    await sendWithRetry(target.method || "PUT", target.url, file, target.headers, (loaded) =>
      onProgress(Math.min(1, loaded / total)),
    );
  }
  onProgress(1);
}
