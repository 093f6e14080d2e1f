// The model picker and the reasoning switch in the header: the models from /api/models/
// (the picker hidden when there is only one), the open session's model, and the level a
// model that can think is asked for (the switch shown only for such a model). What the
// next message asks for is choice(); a model's name for a reply is label().

import { AuthError, api } from "./api.js";
import { $ } from "./util.js";

const REASONING_KEY = "construct.reasoning";
const LEVELS = ["off", "low", "medium", "high"];

export class ModelPicker {
  /** `hooks`: authFailed(); loaded() once the list (and so the labels) are known. */
  constructor(hooks) {
    this.hooks = hooks;
    this.models = []; // [{id, label, provider, thinking}], the default first
    this.sessionId = null;
    this.sessionModel = null; // the open session's model, as the server said
    this.touched = false; // the person chose another model for the next message
    this.box = $("model-picker");
    this.select = $("model-select");
    this.reasoningBox = $("reasoning-picker");
    this.reasoning = $("reasoning-select");
    this.select.addEventListener("change", () => {
      this.touched = true;
      this.drawReasoning();
    });
    this.reasoning.addEventListener("change", () => {
      try {
        localStorage.setItem(REASONING_KEY, this.reasoning.value);
      } catch {
        // not remembered
      }
    });
  }

  async load() {
    let data;
    try {
      data = await api.models();
    } catch (error) {
      if (error instanceof AuthError) this.hooks.authFailed();
      return; // no picker: messages go to the session's model
    }
    const models = Array.isArray(data?.models) ? data.models : [];
    this.models = models.filter((m) => m && typeof m.id === "string");
    this.select.replaceChildren(
      ...this.models.map((m) => {
        const option = document.createElement("option");
        option.value = m.id;
        option.textContent = m.label || m.id;
        return option;
      }),
    );
    this.reasoning.value = this.rememberedLevel(data?.reasoning_default);
    this.box.hidden = this.models.length < 2;
    this.show(this.sessionModel);
    this.hooks.loaded();
  }

  rememberedLevel(fallback) {
    let saved = null;
    try {
      saved = localStorage.getItem(REASONING_KEY);
    } catch {
      // no storage
    }
    if (LEVELS.includes(saved)) return saved;
    return LEVELS.includes(fallback) ? fallback : "off";
  }

  /** session_start: the session's model, unless the person already picked another for it. */
  sessionStarted(sessionId, modelId) {
    if (sessionId !== this.sessionId) this.touched = false;
    this.sessionId = sessionId;
    this.sessionModel = typeof modelId === "string" ? modelId : null;
    if (!this.touched) this.show(this.sessionModel);
  }

  /** A turn ended, answered by `modelId`: that is the session's model now. */
  answered(modelId) {
    if (typeof modelId !== "string") return;
    this.sessionModel = modelId;
    if (this.touched && this.select.value === modelId) this.touched = false;
    if (!this.touched) this.show(modelId);
  }

  show(modelId) {
    if (modelId && this.models.some((m) => m.id === modelId)) this.select.value = modelId;
    this.drawReasoning();
  }

  current() {
    return this.models.find((m) => m.id === this.select.value) || null;
  }

  drawReasoning() {
    const model = this.current();
    this.reasoningBox.hidden = !(model && model.thinking);
  }

  /** The fields the next message (or edit, or regenerate) carries: `model`, `reasoning`. */
  choice() {
    const model = this.current();
    const fields = {};
    if (!model) return fields;
    if (this.models.length > 1) fields.model = model.id;
    if (model.thinking) fields.reasoning = this.reasoning.value;
    return fields;
  }

  /** The name people see for model `modelId` (its id when it is not listed). */
  label(modelId) {
    return this.models.find((m) => m.id === modelId)?.label || modelId || "";
  }

  /** Signed out: nothing of the last person's choice stays. */
  clear() {
    this.models = [];
    this.select.replaceChildren();
    this.box.hidden = true;
    this.reasoningBox.hidden = true;
    this.sessionId = null;
    this.sessionModel = null;
    this.touched = false;
  }
}
