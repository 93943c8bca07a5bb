// SPDX-License-Identifier: GPL-3.0-or-later
// ComfyUI frontend extension: show the 4D player in the "Save 4D Splats" node after it ran.
import { app } from "../../scripts/app.js";
import { createPlayer } from "./player.mjs";

window.Fuse4DPlayer = { createPlayer };

app.registerExtension({
  name: "Fuse4D.Player",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "Fuse4DSave4DSplats") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const info = message?.fuse4d_splats?.[0];
      if (!info) return;
      if (!this.fuse4dContainer) {
        this.fuse4dContainer = document.createElement("div");
        this.addDOMWidget("fuse4d_player", "fuse4d_player", this.fuse4dContainer, { serialize: false });
        this.setSize([Math.max(this.size[0], 400), Math.max(this.size[1], 360)]);
      }
      this.fuse4dPlayer?.dispose();
      createPlayer(this.fuse4dContainer, info).then((p) => { this.fuse4dPlayer = p; })
        .catch((e) => { this.fuse4dContainer.textContent = `Fuse4D player: ${e}`; console.error(e); });
    };
  },
});
