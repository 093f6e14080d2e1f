// The attachment tray under the message box: files picked with the paperclip, dropped on
// the conversation or pasted (images) are uploaded at once into the open session, shown as
// chips (name, size, remove) with one progress bar, and handed to the next message sent.

import { AuthError, api } from "./api.js";
import { sizeLabel } from "./files.js";
import { state } from "./state.js";
import { $, el } from "./util.js";

export class AttachmentTray {
  /** `hooks`: error(text) to show a failed upload; authFailed() when the token is refused. */
  constructor(hooks) {
    this.hooks = hooks;
    this.items = []; // [{file, chip, upload, loaded, attachment, failed}]
    this.tray = $("attach-tray");
    this.chips = $("attach-chips");
    this.progress = $("attach-progress");
    this.input = $("attach-input");
    $("attach").addEventListener("click", () => this.input.click());
    this.input.addEventListener("change", () => {
      this.add([...this.input.files]);
      this.input.value = "";
    });
    $("input").addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])];
      if (!files.length) return; // text: the box takes it as usual
      event.preventDefault();
      this.add(files);
    });
    const dropZone = document.querySelector("main.chat");
    dropZone.addEventListener("dragover", (event) => {
      if (![...(event.dataTransfer?.types || [])].includes("Files")) return;
      event.preventDefault();
      dropZone.classList.add("dropping");
    });
    dropZone.addEventListener("dragleave", (event) => {
      if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
    });
    dropZone.addEventListener("drop", (event) => {
      dropZone.classList.remove("dropping");
      const files = [...(event.dataTransfer?.files || [])];
      if (!files.length) return;
      event.preventDefault();
      this.add(files);
    });
  }

  /** Upload each file into the open session (which the upload makes if it is new). */
  add(files) {
    const sessionId = state.sessionId;
    if (!sessionId) return;
    for (const file of files) {
      const item = { file, sessionId, loaded: 0, attachment: null, failed: false };
      const remove = el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${file.name}`, title: "Remove" }, "×");
      item.label = el("span", { class: "chip-name" }, file.name || "pasted image");
      item.size = el("span", { class: "chip-size" }, sizeLabel(file.size));
      item.chip = el("li", { class: "attach-chip", "data-state": "uploading" }, item.label, item.size, remove);
      remove.addEventListener("click", () => this.remove(item));
      this.items.push(item);
      this.chips.append(item.chip);
      item.upload = api.uploadAttachment(sessionId, file, (loaded) => {
        item.loaded = loaded;
        this.drawProgress();
      });
      item.upload.done.then(
        (attachment) => {
          item.attachment = attachment;
          item.chip.dataset.state = "ready";
          item.chip.dataset.attachmentId = attachment.id;
          this.drawProgress();
        },
        (error) => {
          if (!this.items.includes(item)) return; // removed: the abort is no news
          item.failed = true;
          item.chip.dataset.state = "failed";
          item.size.textContent = error.message;
          this.drawProgress();
          if (error instanceof AuthError) this.hooks.authFailed();
          else this.hooks.error(`Could not attach ${file.name}: ${error.message}`);
        },
      );
    }
    this.drawProgress();
  }

  remove(item) {
    this.items = this.items.filter((i) => i !== item);
    item.chip.remove();
    if (item.attachment) {
      // Uploaded but never sent: the server need not keep it.
      api.removeAttachment(item.sessionId, item.attachment.id).catch(() => {});
    } else {
      item.upload.abort();
    }
    this.drawProgress();
  }

  /** True while a file is still on its way. */
  uploading() {
    return this.items.some((i) => !i.attachment && !i.failed);
  }

  /**
   * The uploaded files for the message being sent ({id, name, mime, size} each), and an
   * empty tray; null while an upload is still running (the message waits for it).
   */
  take() {
    if (this.uploading()) return null;
    const ready = this.items.filter((i) => i.attachment && i.sessionId === state.sessionId).map((i) => i.attachment);
    this.items = [];
    this.chips.replaceChildren();
    this.drawProgress();
    return ready;
  }

  /** Another session, or signed out: what was not sent is dropped (uploads stop). */
  clear() {
    for (const item of this.items) if (!item.attachment) item.upload.abort();
    this.items = [];
    this.chips.replaceChildren();
    this.drawProgress();
  }

  drawProgress() {
    this.tray.hidden = !this.items.length;
    const running = this.items.filter((i) => !i.attachment && !i.failed);
    this.progress.hidden = !running.length;
    if (running.length) {
      const total = running.reduce((sum, i) => sum + (i.file.size || 0), 0) || 1;
      const loaded = running.reduce((sum, i) => sum + Math.min(i.loaded, i.file.size || 0), 0);
      this.progress.value = loaded / total;
    }
  }
}
