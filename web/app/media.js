// Photos and videos: a BlurHash placeholder first, then the right rendition.
import { decode, isBlurhashValid } from "../vendor/blurhash/blurhash.js";
import { apiUrl } from "./config.js";
import { h, t } from "./dom.js";

// ImageSize widths (schema.graphql: THUMB 150 square, FEED 640, FULL 1080).
export const WIDTHS = { thumb: 150, feed: 640, full: 1080 };
const PLACEHOLDER_PIXELS = 32;

/** A small canvas painted with the BlurHash (CSS stretches it over the media box). */
export function placeholderCanvas(hash, testid = "post-placeholder") {
  const canvas = t("canvas", testid, {
    class: "placeholder",
    width: PLACEHOLDER_PIXELS,
    height: PLACEHOLDER_PIXELS,
    "aria-hidden": "true",
  });
  if (hash && isBlurhashValid(hash).result) {
    try {
      const pixels = decode(hash, PLACEHOLDER_PIXELS, PLACEHOLDER_PIXELS);
      const ctx = canvas.getContext("2d");
      const image = ctx.createImageData(PLACEHOLDER_PIXELS, PLACEHOLDER_PIXELS);
      image.data.set(pixels);
      ctx.putImageData(image, 0, 0);
      canvas.dataset.painted = "true";
    } catch (error) {
      console.warn("BlurHash not decoded", error);
    }
  }
  return canvas;
}

function srcset(media, format, sizes = ["thumb", "feed", "full"]) {
  return sizes
    .map((size) => [media[`${size}${format}`], WIDTHS[size]])
    .filter(([url]) => url)
    .map(([url, width]) => `${apiUrl(url)} ${width}w`)
    .join(", ");
}

/**
 * <picture> with a WebP <source> and a JPEG <img srcset sizes>, faded in over its
 * placeholder when loaded. `sizes` is the CSS width the image is shown at.
 */
export function picture(media, { sizes, testid = "post-image", alt = "", eager = false } = {}) {
  const img = t("img", testid, {
    src: apiUrl(media.feedJpeg || media.thumbJpeg),
    srcset: srcset(media, "Jpeg"),
    sizes,
    alt,
    loading: eager ? "eager" : "lazy",
    decoding: "async",
    draggable: "false",
  });
  const show = () => img.classList.add("loaded");
  img.addEventListener("load", show);
  img.addEventListener("error", () => img.classList.add("broken"));
  if (img.complete && img.naturalWidth) show();
  return h("picture", {}, h("source", { type: "image/webp", srcset: srcset(media, "Webp"), sizes }), img);
}

const ALT_CAPTION = 100; // characters of the caption an alt text quotes

/**
 * Alt text for a post's media item: "Photo by @ada: Sunset over the bay…" (the API has
 * no descriptions of its own, so the caption stands in, truncated).
 */
export function mediaAlt(post, index = 0) {
  const media = post.media || [];
  const kind = media[index] && media[index].kind === "VIDEO" ? "Video" : "Photo";
  const which = media.length > 1 ? ` ${index + 1} of ${media.length}` : "";
  const by = post.author ? ` by @${post.author.username}` : "";
  const chars = [...(post.caption || "").replace(/\s+/g, " ").trim()];
  const caption = chars.length > ALT_CAPTION ? `${chars.slice(0, ALT_CAPTION - 1).join("").trimEnd()}…` : chars.join("");
  return `${kind}${which}${by}${caption ? `: ${caption}` : ""}`;
}

/** The aspect ratio to reserve for a media item, kept within Instagram's 4:5 .. 1.91:1. */
export function aspect(media) {
  if (!media.width || !media.height) return 1;
  return Math.min(1.91, Math.max(0.8, media.width / media.height));
}

/** One media item of a post: placeholder canvas under a picture, or a video with its poster. */
export function mediaItem(media, { sizes = "(max-width: 500px) 100vw, 470px", eager = false, alt = "" } = {}) {
  const box = h("div", { class: "media-item", style: { aspectRatio: String(aspect(media)) } });
  box.append(placeholderCanvas(media.placeholder));
  if (media.kind === "VIDEO" && media.videoUrl) {
    box.append(
      h("video", {
        class: "loaded",
        "data-testid": "post-video",
        src: apiUrl(media.videoUrl),
        poster: apiUrl(media.feedJpeg) || false,
        controls: true,
        // A double tap on the post likes it: never fullscreen (see post-card.js).
        controlslist: "nofullscreen",
        muted: true,
        playsinline: true,
        loop: true,
        preload: "metadata",
        "aria-label": alt || false,
      }),
    );
  } else if (media.feedJpeg || media.thumbJpeg) {
    box.append(picture(media, { sizes, eager, alt }));
  } else {
    box.append(h("div", { class: "media-pending" }, "Processing…"));
  }
  return box;
}

/** A square grid cell image (profile and hashtag grids). */
export function gridImage(media, alt = "") {
  const box = h("div", { class: "grid-media" });
  box.append(placeholderCanvas(media.placeholder, "grid-placeholder"));
  if (media.thumbJpeg || media.feedJpeg) {
    const img = h("img", {
      src: apiUrl(media.thumbJpeg || media.feedJpeg),
      srcset: srcset(media, "Jpeg", ["thumb", "feed"]),
      sizes: "(max-width: 935px) 33vw, 300px",
      alt,
      loading: "lazy",
      decoding: "async",
    });
    img.addEventListener("load", () => img.classList.add("loaded"));
    if (img.complete && img.naturalWidth) img.classList.add("loaded");
    const webp = srcset(media, "Webp", ["thumb", "feed"]);
    box.append(h("picture", {}, h("source", { type: "image/webp", srcset: webp, sizes: img.sizes }), img));
  }
  if (media.kind === "VIDEO") box.append(h("span", { class: "grid-badge", "aria-label": "Video" }, "▶"));
  return box;
}
