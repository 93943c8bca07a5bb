// SPDX-License-Identifier: GPL-3.0-or-later
// ComfyUI frontend extension: show the 4D player in the "Save 4D Splats" node after it ran.
import { app } from "../../scripts/app.js";
import { createPlayer } from "./player.mjs";

window.Fuse4DPlayer = { createPlayer };

const PLAYER_W = 384;
const PLAYER_H = 288;

app.registerExtension({
  name: "Fuse4D.Player",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "Fuse4DSave4DSplats") return;
    const onExecuted = nodeType.prototype.onExecuted;
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const info = message?.fuse4d_splats?.[0];
      if (!info) return;
      if (!this.fuse4dContainer) {
        this.fuse4dContainer = document.createElement("div");
        const widget = this.addDOMWidget("fuse4d_player", "fuse4d_player", this.fuse4dContainer,
          { serialize: false, hideOnZoom: false });
        widget.serialize = false;
        widget.computeLayoutSize = () => ({ minHeight: PLAYER_H + 32, minWidth: PLAYER_W + 16 });
        this.setSize([Math.max(this.size[0], PLAYER_W + 16), Math.max(this.size[1], PLAYER_H + 120)]);
      }
      this.fuse4dPlayer?.dispose();
      this.fuse4dPlayer = null;
      this.fuse4dInfo = info;
      this.fuse4dError = null;
      const container = this.fuse4dContainer;
      this.fuse4dLoading = createPlayer(container, info, { width: PLAYER_W, height: PLAYER_H })
        .then((p) => { this.fuse4dPlayer = p; app.graph?.setDirtyCanvas(true, true); return p; })
        .catch((e) => {
          this.fuse4dError = String(e);
          container.textContent = `Fuse4D player: ${e}`;
          console.error(e);
        });
    };
    nodeType.prototype.onRemoved = function () {
      this.fuse4dPlayer?.dispose();
      this.fuse4dPlayer = null;
      return onRemoved?.apply(this, arguments);
    };
  },
});
