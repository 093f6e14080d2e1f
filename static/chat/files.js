// Attached files in a message: images as thumbnails, other files as download links. Their
// download needs the token, so each file is fetched (api.js) and shown from a blob: URL.

import { api } from "./api.js";
import { state } from "./state.js";
import { el } from "./util.js";

const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
// Blob URLs of the images shown, by session and attachment id: fetched once a page.
const blobUrls = new Map();

/** "12.3 KB" */
export function sizeLabel(bytes) {
  const size = Number(bytes) || 0;
  if (size < 1024) return `${size} B`;
  const units = ["KB", "MB", "GB"];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function attachmentBlobUrl(sessionId, attachment) {
  const key = `${sessionId}/${attachment.id}`;
  if (!blobUrls.has(key)) {
    const url = api.attachmentBlob(sessionId, attachment.id, attachment.mime).then((blob) => URL.createObjectURL(blob));
    url.catch(() => blobUrls.delete(key)); // try again next time
    blobUrls.set(key, url);
  }
  return blobUrls.get(key);
}

/** Signed out: the images of that user go from memory. */
export function forgetAttachmentImages() {
  for (const url of blobUrls.values()) url.then((u) => URL.revokeObjectURL(u)).catch(() => {});
  blobUrls.clear();
}

/**
 * A message's attachments: images as thumbnails, other files as download links. The files
 * are fetched with the token (their download needs it) and shown from blob: URLs.
 */
export function attachmentList(attachments, sessionId = state.sessionId) {
  const items = Array.isArray(attachments) ? attachments.filter((a) => a && typeof a.id === "string") : [];
  if (!items.length) return null;
  const list = el("div", { class: "attachments" });
  for (const attachment of items) {
    const name = String(attachment.name || "attachment");
    const label = `${name} (${sizeLabel(attachment.size)})`;
    if (IMAGE_TYPES.has(attachment.mime)) {
      const img = el("img", { class: "attachment-thumb", alt: name, title: label });
      const figure = el("figure", { class: "attachment image", "data-attachment-id": attachment.id }, img);
      attachmentBlobUrl(sessionId, attachment)
        .then((url) => {
          img.src = url;
        })
        .catch(() => figure.replaceWith(el("span", { class: "attachment missing" }, `${name} (unavailable)`)));
      list.append(figure);
    } else {
      const link = el("a", { class: "attachment file", href: "#", "data-attachment-id": attachment.id, title: attachment.mime || "" }, label);
      link.addEventListener("click", async (event) => {
        event.preventDefault();
        try {
          const url = URL.createObjectURL(await api.attachmentBlob(sessionId, attachment.id, "application/octet-stream"));
          const save = el("a", { href: url, download: name, hidden: true });
          document.body.append(save);
          save.click();
          save.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (error) {
          link.textContent = `${label}: ${error.message}`;
        }
      });
      list.append(link);
    }
  }
  return list;
}
