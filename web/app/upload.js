// Sending a file's bytes straight to its upload target (never through the API),
// with upload progress from XHR.
//
//   await uploadFile(file, target, (fraction) => progress.value = fraction * 100);
//
// target is an UploadTarget: PUT (body = bytes, with `headers`), POST (multipart form:
// `fields` then the file), or multipart parts (`partUrls`, `partSize`): each byte range
// PUT to its URL in order. The server lists the parts itself on completeUpload, so the
// parts' ETags are not needed.
import { apiUrl } from "./config.js";

// Headers a browser sets itself and refuses from scripts.
const FORBIDDEN = new Set(["content-length", "host", "connection", "expect", "accept-encoding"]);

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
        reject(new Error(`Upload refused: HTTP ${xhr.status}${detail ? ` (${detail})` : ""}`));
      }
    };
    xhr.onerror = () => reject(new Error("Upload failed: network error (is CORS allowed on the upload target?)"));
    xhr.onabort = () => reject(new Error("Upload aborted"));
    xhr.send(body);
  });
}

export async function uploadFile(file, target, onProgress = () => {}) {
  const total = file.size || 1;
  if (target.partUrls && target.partUrls.length) {
    const partSize = Number(target.partSize);
    const sent = new Array(target.partUrls.length).fill(0);
    const report = () => onProgress(Math.min(1, sent.reduce((a, b) => a + b, 0) / total));
    for (let i = 0; i < target.partUrls.length; i++) {
      const slice = file.slice(i * partSize, Math.min(file.size, (i + 1) * partSize));
      await send("PUT", target.partUrls[i], slice, target.headers, (loaded) => {
        sent[i] = loaded;
        report();
      });
      sent[i] = slice.size;
      report();
    }
  } else if (target.method === "POST") {
    const form = new FormData();
    for (const { name, value } of target.fields || []) form.append(name, value);
    form.append("file", file);
    await send("POST", target.url, form, target.headers, (loaded, all) => onProgress(loaded / all));
  } else {
    await send(target.method || "PUT", target.url, file, target.headers, (loaded) =>
      onProgress(Math.min(1, loaded / total)),
    );
  }
  onProgress(1);
}
