// New post: pick 1 to 10 photos or a video, write a caption, upload each file
// straight to its upload target with a progress bar, then wait until READY.
import { gql, isTransient, payload } from "../api.js";
import { h, plural, t } from "../dom.js";
import { navigate } from "../router.js";
import { showError } from "../toast.js";
import { uploadFile } from "../upload.js";

const MAX_FILES = 10;
const POLL_MS = 1000;
const POLL_MAX_MS = 15_000; // the longest wait between polls while the API is unreachable
const POLL_LIMIT_MS = 10 * 60 * 1000;
const PARALLEL_UPLOADS = 3;

const STATUS_TEXT = {
  PENDING: "Creating the post…",
  UPLOADING: "Uploading…",
  PROCESSING: "Processing: checking and resizing…",
  READY: "Posted.",
  FAILED: "Failed.",
};

function newKey() {
  return crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The file a UserError is about (`media.2.byteSize` -> 2), or null. */
export function fileIndexOf(field) {
  const m = /^media\.(\d+)(?:\.|$)/.exec(field || "");
  return m ? Number(m[1]) : null;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function newPostView(root) {
  let files = [];
  let idempotencyKey = newKey();
  let stopped = false;
  const objectUrls = [];

  const fileInput = t("input", "file-input", { type: "file", multiple: true, accept: "image/*,video/*", id: "file-input", class: "visually-hidden" });
  const pick = h("label", { for: "file-input", class: "button primary" }, "Select photos or a video");
  const previews = h("ol", { class: "upload-list" });
  const caption = t("textarea", "caption-input", { placeholder: "Write a caption… #hashtags and @mentions welcome", maxlength: 2200, rows: 3, "aria-label": "Caption" });
  const counter = h("span", { class: "muted small" }, "0/2200");
  const submit = t("button", "post-submit", { type: "submit", class: "primary", disabled: true }, "Share");
  const status = t("p", "upload-status", { class: "upload-status", role: "status", "aria-live": "polite", hidden: true });
  const problems = h("ul", { class: "form-error upload-errors", role: "alert", hidden: true });
  const after = h("div", { class: "after-actions", hidden: true });

  function setStatus(value, detail = "") {
    status.hidden = false;
    delete status.dataset.interrupted;
    delete status.dataset.stillProcessing;
    status.dataset.status = value;
    status.className = `upload-status status-${value.toLowerCase()}`;
    status.textContent = detail ? `${STATUS_TEXT[value]} ${detail}` : STATUS_TEXT[value];
  }

  /** Every problem the API reported, each next to its file when it is about one. */
  function showProblems(error) {
    const errors = error.errors && error.errors.length && error.errors.every((e) => e.message) ? error.errors : [error];
    const items = previews.querySelectorAll(".upload-item");
    previews.querySelectorAll(".upload-item-error").forEach((el) => el.remove());
    const general = [];
    for (const e of errors) {
      const text = e.code && e.code !== e.message ? `${e.message} (${e.code})` : e.message;
      const i = fileIndexOf(e.field);
      if (i !== null && items[i]) {
        items[i].querySelector(".upload-meta").append(h("span", { class: "form-error small upload-item-error", role: "alert" }, text));
        general.push(`${files[i] ? files[i].name : `File ${i + 1}`}: ${text}`);
      } else general.push(text);
    }
    problems.replaceChildren(...general.map((text) => h("li", {}, text)));
    problems.hidden = general.length === 0;
  }

  function clearProblems() {
    problems.hidden = true;
    problems.replaceChildren();
    previews.querySelectorAll(".upload-item-error").forEach((el) => el.remove());
  }

  function renderFiles() {
    objectUrls.splice(0).forEach((u) => URL.revokeObjectURL(u));
    previews.replaceChildren(
      ...files.map((file, i) => {
        const url = URL.createObjectURL(file);
        objectUrls.push(url);
        const thumb = file.type.startsWith("video/")
          ? h("video", { src: url, muted: true, class: "upload-thumb" })
          : h("img", { src: url, alt: "", class: "upload-thumb" });
        return h(
          "li",
          { class: "upload-item" },
          thumb,
          h("div", { class: "upload-meta" }, h("span", { class: "upload-name" }, file.name), h("span", { class: "muted small" }, `${file.type || "unknown type"} · ${formatBytes(file.size)}`), t("progress", "upload-progress", { max: 100, value: 0, "data-file-index": i, "aria-label": `Upload of ${file.name}` })),
        );
      }),
    );
    submit.disabled = files.length === 0;
  }

  fileInput.addEventListener("change", () => {
    const chosen = [...fileInput.files];
    if (chosen.length > MAX_FILES) {
      showError(new Error(`Choose at most ${MAX_FILES} files (you chose ${chosen.length}).`));
      files = chosen.slice(0, MAX_FILES);
    } else files = chosen;
    idempotencyKey = newKey();
    status.hidden = true;
    clearProblems();
    renderFiles();
  });
  caption.addEventListener("input", () => {
    counter.textContent = `${caption.value.length}/2200`;
  });

  /** Poll the post until READY or FAILED, riding out network blips and restarts. */
  async function waitUntilDone(postId) {
    const started = Date.now();
    let delay = POLL_MS;
    while (!stopped && Date.now() - started < POLL_LIMIT_MS) {
      let post;
      try {
        ({ post } = await gql("PostStatus", { id: postId }));
      } catch (error) {
        if (!isTransient(error)) throw error;
        console.warn("PostStatus: will retry", error);
        setStatus("PROCESSING", "(waiting for the connection…)");
        delay = Math.min(delay * 2, POLL_MAX_MS);
        await sleep(delay);
        continue;
      }
      if (!post) throw new Error("The post is gone.");
      if (post.status === "READY" || post.status === "FAILED") return post;
      if (delay !== POLL_MS) setStatus("PROCESSING");
      delay = POLL_MS;
      await sleep(delay);
    }
    return null;
  }

  async function upload(targets, bars) {
    setStatus("UPLOADING", plural(files.length, "file"));
    const queue = files.map((file, i) => ({ file, i }));
    const worker = async () => {
      for (let job = queue.shift(); job; job = queue.shift()) {
        const { file, i } = job;
        delete bars[i].dataset.state;
        try {
          await uploadFile(file, targets[i], (fraction) => {
            bars[i].value = Math.round(fraction * 100);
          });
        } catch (error) {
          queue.length = 0; // the other workers stop after their current file
          // Not sent after all (whatever the bar last showed): back to 0, marked failed.
          bars[i].value = 0;
          bars[i].dataset.state = "failed";
          throw error;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL_UPLOADS, files.length) }, worker));
  }

  async function share(event) {
    event.preventDefault();
    if (!files.length) return;
    submit.disabled = true;
    fileInput.disabled = true;
    after.hidden = true;
    clearProblems();
    const bars = [...previews.querySelectorAll("progress")];
    let postId = null;
    try {
      setStatus("PENDING");
      const input = {
        caption: caption.value.trim() || null,
        media: files.map((f) => ({ contentType: f.type || "application/octet-stream", byteSize: String(f.size) })),
        idempotencyKey,
      };
      const created = payload((await gql("CreatePost", { input })).createPost);
      postId = created.post.id;
      status.dataset.postId = postId;

      // Share again after an interruption: the same key gives back the same post. A
      // post still PENDING comes with fresh upload targets; one past that has none,
      // and its bytes are already in.
      let current = created.post.status;
      const targets = created.uploads || [];
      if (current === "PENDING" && targets.length === files.length) await upload(targets, bars);
      else bars.forEach((bar) => { bar.value = 100; delete bar.dataset.state; });

      let done = null;
      if (current === "PENDING") {
        const completed = payload((await gql("CompleteUpload", { postId })).completeUpload);
        current = completed.post.status;
        if (current === "READY" || current === "FAILED") done = completed.post;
      }
      if (!done) {
        setStatus("PROCESSING");
        done = await waitUntilDone(postId);
      }
      if (!done) {
        if (stopped) return;
        // Polled for POLL_LIMIT_MS and still not done: the worker is slow or backed up.
        // The post is not lost: say so, and let the person leave or check again.
        status.dataset.stillProcessing = "true";
        status.textContent = "Still processing; it will appear in your feed when ready. Press Share to check again.";
        after.replaceChildren(h("a", { class: "button", href: "#/", "data-testid": "new-post-close" }, "Close"));
        after.hidden = false;
        submit.disabled = false;
        fileInput.disabled = false;
        return;
      }
      if (done.status === "READY") {
        setStatus("READY");
        after.replaceChildren(
          h("a", { class: "button primary", href: `#/p/${encodeURIComponent(postId)}` }, "View post"),
          h("a", { class: "button", href: "#/" }, "Back to feed"),
          h("button", { class: "button", type: "button", onclick: () => navigate("/new") }, "New post"),
        );
      } else {
        setStatus("FAILED", done.failureReason || "");
        after.replaceChildren(h("button", { class: "button", type: "button", onclick: () => navigate("/new") }, "Start over"));
      }
      after.hidden = false;
    } catch (error) {
      if (stopped) return;
      showProblems(error);
      if (postId === null) {
        // Refused before any post existed: nothing was created.
        const count = (error.errors || []).length;
        setStatus("FAILED", count > 1 ? `${count} problems, listed below.` : error.message);
      } else {
        // The post exists and has not failed: Share again picks it up where it stopped.
        status.dataset.interrupted = "true";
        status.textContent = `${STATUS_TEXT[status.dataset.status]} Interrupted: ${error.message} Press Share to try again.`;
      }
      console.warn("Could not post", error);
      submit.disabled = false;
      fileInput.disabled = false;
    }
  }

  const form = h(
    "form",
    { class: "new-post-form" },
    h("div", { class: "picker" }, fileInput, pick, h("span", { class: "muted small" }, "Up to 10 photos, or one video.")),
    previews,
    h("div", { class: "field" }, caption, counter),
    h("div", { class: "form-actions" }, h("a", { href: "#/", class: "button" }, "Cancel"), submit),
    status,
    problems,
    after,
  );
  form.addEventListener("submit", share);

  root.append(
    t(
      "section",
      "new-post-dialog",
      { class: "card new-post", role: "dialog", "aria-labelledby": "new-post-title" },
      h("h1", { id: "new-post-title" }, "New post"),
      form,
    ),
  );

  return () => {
    stopped = true;
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
  };
}
