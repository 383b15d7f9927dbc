// Stories: the tray of rings above the feed, and the full-screen viewer.
import { gql, payload } from "../api.js";
import { apiUrl } from "../config.js";
import { avatar, h, t, timeAgo } from "../dom.js";
import { icon } from "../icons.js";
import { placeholderCanvas } from "../media.js";
import { navigate } from "../router.js";
import { session } from "../session.js";
import { showError, toast } from "../toast.js";
import { uploadFile } from "../upload.js";

const PHOTO_SECONDS = 5;
let trayCache = null; // the last StoriesTray answer, for the viewer

async function loadTray() {
  const data = await gql("StoriesTray");
  // The server already orders reels (own first, then unseen, then seen); keep that,
  // but make sure unseen reels come before seen ones.
  const reels = data.storiesTray;
  const own = reels.filter((r) => session.viewer && r.author.id === session.viewer.id);
  const others = reels.filter((r) => !own.includes(r));
  trayCache = [...own, ...others.filter((r) => r.hasUnseen), ...others.filter((r) => !r.hasUnseen)];
  return trayCache;
}

function ring(reel) {
  return t(
    "a",
    "story-ring",
    {
      href: `#/stories/${encodeURIComponent(reel.author.id)}`,
      class: reel.hasUnseen ? "story-ring unseen" : "story-ring seen",
      "data-user-id": reel.author.id,
      "data-unseen": String(reel.hasUnseen),
      title: reel.author.username,
    },
    h("span", { class: "ring" }, avatar(reel.author, 56)),
    h("span", { class: "ring-name" }, reel.author.username),
  );
}

/** Add a story: pick a file, createStory, upload, completeStoryUpload. */
function addStoryButton(onDone, hasOwn = false) {
  const idle = hasOwn ? "Add to story" : "Your story";
  const input = h("input", { type: "file", accept: "image/*,video/*", hidden: true });
  const label = h("span", { class: "ring-name" }, idle);
  const button = h(
    "button",
    { class: "story-ring add-story", type: "button", "data-testid": "add-story", "aria-label": hasOwn ? "Add to your story" : "Add a story", onclick: () => input.click() },
    h("span", { class: "ring add" }, session.viewer ? avatar(session.viewer, 56) : null, h("span", { class: "plus" }, "+")),
    label,
  );
  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    button.disabled = true;
    try {
      const data = await gql("CreateStory", { media: { contentType: file.type, byteSize: String(file.size) } });
      const { story, uploads } = payload(data.createStory);
      await uploadFile(file, uploads[0], (f) => {
        label.textContent = `${Math.round(f * 100)}%`;
      });
      payload((await gql("CompleteStoryUpload", { storyId: story.id })).completeStoryUpload);
      toast("Story uploaded: it appears once processed.");
      setTimeout(onDone, 3000);
    } catch (error) {
      showError(error, "Could not add the story");
    } finally {
      button.disabled = false;
      label.textContent = idle;
      input.value = "";
    }
  });
  return h("div", {}, button, input);
}

/** The tray element; fills itself in. */
export function storiesTray() {
  const tray = t("div", "stories-tray", { class: "card stories-tray", role: "list" });
  const refresh = async () => {
    try {
      const reels = await loadTray();
      const hasOwn = reels.some((r) => session.viewer && r.author.id === session.viewer.id);
      // Adding a story stays possible with a live reel: it joins the end of that reel.
      tray.replaceChildren(addStoryButton(refresh, hasOwn), ...reels.map(ring));
    } catch (error) {
      showError(error, "Could not load stories");
    }
  };
  refresh();
  return tray;
}

/** #/stories/<userId>: the reel of that user, then the next reels, tap to advance. */
export function storyViewerView(root, { userId }) {
  let reels = trayCache || [];
  let reelIndex = -1;
  let storyIndex = 0;
  let timer = null;
  let closed = false;

  const bars = h("div", { class: "story-bars" });
  const header = h("div", { class: "story-header" });
  const stage = h("div", { class: "story-stage" });
  const close = t("button", "story-close", { class: "story-close", type: "button", "aria-label": "Close" }, icon("close", { size: 28 }));
  const viewer = t(
    "div",
    "story-viewer",
    { class: "story-viewer", role: "dialog", "aria-modal": "true", "aria-label": "Story" },
    h(
      "div",
      { class: "story-frame" },
      bars,
      header,
      stage,
      h("button", { type: "button", class: "story-tap prev", "aria-label": "Previous story" }),
      h("button", { type: "button", class: "story-tap next", "aria-label": "Next story" }),
    ),
    close,
  );

  function exit() {
    if (closed) return;
    closed = true;
    clearTimeout(timer);
    navigate("/");
  }

  function advance(delta) {
    clearTimeout(timer);
    if (closed) return;
    const reel = reels[reelIndex];
    const next = storyIndex + delta;
    if (next >= 0 && next < reel.stories.length) {
      storyIndex = next;
      show();
    } else if (delta > 0 && reelIndex + 1 < reels.length) {
      reelIndex += 1;
      storyIndex = firstUnseen(reels[reelIndex]);
      show();
    } else if (delta < 0 && reelIndex > 0) {
      reelIndex -= 1;
      storyIndex = 0;
      show();
    } else if (delta > 0) exit();
  }

  function firstUnseen(reel) {
    const i = reel.stories.findIndex((s) => !s.viewerHasSeen);
    return i < 0 ? 0 : i;
  }

  function show() {
    clearTimeout(timer);
    if (closed) return; // left the viewer while something was loading
    const reel = reels[reelIndex];
    const story = reel.stories[storyIndex];
    viewer.dataset.userId = reel.author.id;
    viewer.dataset.storyId = story.id;
    bars.replaceChildren(
      ...reel.stories.map((s, i) =>
        h("span", { class: i < storyIndex ? "bar done" : i === storyIndex ? "bar active" : "bar" }, h("span", { class: "fill" })),
      ),
    );
    header.replaceChildren(
      avatar(reel.author, 32),
      h("a", { class: "username", href: `#/u/${encodeURIComponent(reel.author.username)}` }, reel.author.username),
      h("span", { class: "muted" }, timeAgo(story.createdAt)),
    );
    const m = story.media;
    let media;
    if (m.kind === "VIDEO" && m.videoUrl) {
      media = t("video", "story-media", { src: apiUrl(m.videoUrl), poster: apiUrl(m.fullJpeg) || false, autoplay: true, muted: true, playsinline: true });
      media.addEventListener("ended", () => advance(1));
      media.addEventListener("loadedmetadata", () => setDuration(media.duration));
    } else {
      media = h(
        "picture",
        {},
        h("source", { type: "image/webp", srcset: apiUrl(m.fullWebp) || "" }),
        t("img", "story-media", { src: apiUrl(m.fullJpeg) || "", alt: `Story by ${reel.author.username}` }),
      );
      setDuration(PHOTO_SECONDS);
      timer = setTimeout(() => advance(1), PHOTO_SECONDS * 1000);
    }
    stage.replaceChildren(placeholderCanvas(m.placeholder, "story-placeholder"), media);
    if (!story.viewerHasSeen) {
      story.viewerHasSeen = true;
      reel.hasUnseen = reel.stories.some((s) => !s.viewerHasSeen);
      gql("MarkStorySeen", { storyId: story.id })
        .then((data) => payload(data.markStorySeen))
        .catch((error) => showError(error, "Could not mark the story seen"));
    }
  }

  function setDuration(seconds) {
    const active = bars.querySelector(".bar.active .fill");
    if (active && Number.isFinite(seconds)) active.style.animationDuration = `${seconds}s`;
  }

  viewer.querySelector(".story-tap.prev").addEventListener("click", () => advance(-1));
  viewer.querySelector(".story-tap.next").addEventListener("click", () => advance(1));
  close.addEventListener("click", exit);
  const onKey = (event) => {
    if (event.key === "Escape") exit();
    else if (event.key === "ArrowRight") advance(1);
    else if (event.key === "ArrowLeft") advance(-1);
  };
  document.addEventListener("keydown", onKey);

  root.append(viewer);
  (async () => {
    try {
      if (!reels.some((r) => r.author.id === userId)) reels = await loadTray();
      if (closed) return;
      reelIndex = reels.findIndex((r) => r.author.id === userId);
      if (reelIndex < 0) {
        toast("No live stories for this account.");
        exit();
        return;
      }
      storyIndex = firstUnseen(reels[reelIndex]);
      show();
    } catch (error) {
      if (closed) return;
      showError(error, "Could not load stories");
      exit();
    }
  })();

  return () => {
    closed = true;
    clearTimeout(timer);
    stage.querySelectorAll("video").forEach((video) => video.pause());
    document.removeEventListener("keydown", onKey);
  };
}
