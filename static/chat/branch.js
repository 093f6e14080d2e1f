// A message's branch controls: ◀ k/n ▶ between its versions, the edit box of a question, the
// regenerate button of the last answer. Plain DOM with callbacks; the conversation wires them.

import { el } from "./util.js";

/** The controls row of a message, made once and kept in the message's element. */
function controlsOf(article) {
  let row = article.querySelector(":scope > .branch-controls");
  if (!row) {
    row = el("div", { class: "branch-controls" });
    article.append(row);
  }
  row.replaceChildren();
  return row;
}

/**
 * Put the controls on a saved message's element: `message` is {id, sibling_ids, role};
 * `actions`: switchTo(messageId), edit(message, content) (questions), regenerate() (when
 * `last` is true, on the last answer).
 */
export function decorate(article, message, { last = false, actions }) {
  article.dataset.messageId = String(message.id);
  const row = controlsOf(article);
  const siblings = Array.isArray(message.sibling_ids) ? message.sibling_ids : [message.id];
  const at = siblings.indexOf(message.id);
  if (siblings.length > 1 && at >= 0) {
    const prev = el("button", { type: "button", class: "branch-prev", title: "Previous version", "aria-label": "Previous version" }, "◀");
    const next = el("button", { type: "button", class: "branch-next", title: "Next version", "aria-label": "Next version" }, "▶");
    prev.disabled = at === 0;
    next.disabled = at === siblings.length - 1;
    prev.addEventListener("click", () => actions.switchTo(siblings[at - 1]));
    next.addEventListener("click", () => actions.switchTo(siblings[at + 1]));
    row.append(el("span", { class: "branch-nav" }, prev, el("span", { class: "branch-pos" }, `${at + 1}/${siblings.length}`), next));
  }
  if (message.role === "user") {
    const edit = el("button", { type: "button", class: "edit-btn", title: "Edit this message and ask again" }, "Edit");
    edit.addEventListener("click", () => openEditor(article, message, actions));
    row.append(edit);
  } else if (last) {
    const again = el("button", { type: "button", class: "regen-btn", title: "Answer this question again" }, "Regenerate");
    again.addEventListener("click", () => actions.regenerate());
    row.append(again);
  }
}

/** Edit in place: the question's text in a box, Save & send (a new version), Cancel. */
function openEditor(article, message, actions) {
  if (article.querySelector(".edit-box")) return;
  const box = el("textarea", { class: "edit-box", rows: "3", "aria-label": "Edited message" });
  box.value = message.content || "";
  const save = el("button", { type: "button", class: "edit-save" }, "Save & send");
  const cancel = el("button", { type: "button", class: "edit-cancel" }, "Cancel");
  const editor = el("div", { class: "editor" }, box, el("div", { class: "editor-actions" }, save, cancel));
  article.classList.add("editing");
  article.append(editor);
  const close = () => {
    editor.remove();
    article.classList.remove("editing");
  };
  cancel.addEventListener("click", close);
  save.addEventListener("click", () => {
    const text = box.value;
    if (!text.trim()) return;
    if (actions.edit(message, text) !== false) close();
  });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
    else if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      save.click();
    }
  });
  box.focus();
}
