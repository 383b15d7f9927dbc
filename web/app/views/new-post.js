// New post: pick 1 to 10 photos or a video, write a caption, upload each file
// straight to its upload target with a progress bar, then wait until READY.
import { gql, payload } from "../api.js";
import { h, plural, t } from "../dom.js";
import { navigate } from "../router.js";
import { showError } from "../toast.js";
import { uploadFile } from "../upload.js";

const MAX_FILES = 10;
const POLL_MS = 1000;
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
  const after = h("div", { class: "after-actions", hidden: true });

  function setStatus(value, detail = "") {
    status.hidden = false;
    status.dataset.status = value;
    status.className = `upload-status status-${value.toLowerCase()}`;
    status.textContent = detail ? `${STATUS_TEXT[value]} ${detail}` : STATUS_TEXT[value];
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
    renderFiles();
  });
  caption.addEventListener("input", () => {
    counter.textContent = `${caption.value.length}/2200`;
  });

  async function waitUntilDone(postId) {
    const started = Date.now();
    while (!stopped && Date.now() - started < POLL_LIMIT_MS) {
      const { post } = await gql("PostStatus", { id: postId });
      if (!post) throw new Error("The post is gone.");
      if (post.status === "READY" || post.status === "FAILED") return post;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    return null;
  }

  async function share(event) {
    event.preventDefault();
    if (!files.length) return;
    submit.disabled = true;
    fileInput.disabled = true;
    after.hidden = true;
    const bars = [...previews.querySelectorAll("progress")];
    try {
      setStatus("PENDING");
      const input = {
        caption: caption.value.trim() || null,
        media: files.map((f) => ({ contentType: f.type || "application/octet-stream", byteSize: String(f.size) })),
        idempotencyKey,
      };
      const created = payload((await gql("CreatePost", { input })).createPost);
      const postId = created.post.id;
      status.dataset.postId = postId;

      setStatus("UPLOADING", plural(files.length, "file"));
      const queue = files.map((file, i) => ({ file, i }));
      const worker = async () => {
        for (let job = queue.shift(); job; job = queue.shift()) {
          const { file, i } = job;
          await uploadFile(file, created.uploads[i], (fraction) => {
            bars[i].value = Math.round(fraction * 100);
          });
        }
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL_UPLOADS, files.length) }, worker));

      const completed = payload((await gql("CompleteUpload", { postId })).completeUpload);
      setStatus(completed.post.status === "READY" ? "READY" : "PROCESSING");
      const done = completed.post.status === "READY" ? completed.post : await waitUntilDone(postId);
      if (!done) return;
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
      setStatus("FAILED", error.message);
      showError(error, "Could not post");
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
