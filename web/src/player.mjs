// SPDX-License-Identifier: GPL-3.0-or-later
// Fuse4D 4D player: per-timestep Gaussian splats played as a flip-book with the Spark renderer
// (three.js), orbit camera, time slider, play/pause. Bundled into ../fuse4d_player.js by build.mjs.
import * as THREE from "three";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";
import { SparkRenderer, SplatMesh } from "@sparkjsdev/spark";

function viewUrl(apiBase, info, file) {
  const q = new URLSearchParams({ filename: file, subfolder: info.subfolder, type: info.type || "output" });
  return `${apiBase}/view?${q}`;
}

// OpenCV (x right, y down, z forward) -> three.js (y up, z back): flip y and z.
const CV_TO_GL = new THREE.Matrix4().makeScale(1, -1, -1);

function cameraFromManifest(cam, camera) {
  const w2c = new THREE.Matrix4().fromArray(cam.viewmat.flat()).transpose();
  const c2w = w2c.clone().invert();
  const glC2w = CV_TO_GL.clone().multiply(c2w).multiply(CV_TO_GL);
  glC2w.decompose(camera.position, camera.quaternion, new THREE.Vector3());
  camera.fov = (2 * Math.atan(cam.height / (2 * cam.K[1][1])) * 180) / Math.PI;
  camera.updateProjectionMatrix();
}

export async function createPlayer(container, info, options = {}) {
  const apiBase = options.apiBase ?? "/api";
  const width = options.width ?? 384;
  const height = options.height ?? 288;
  container.classList.add("fuse4d-player");
  container.style.cssText = "display:flex;flex-direction:column;gap:4px;font:12px sans-serif;color:#ddd";
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setPixelRatio(1);
  renderer.setSize(width, height);
  renderer.setClearColor(0x101014, 1);
  container.appendChild(renderer.domElement);
  const bar = document.createElement("div");
  bar.style.cssText = "display:flex;gap:6px;align-items:center";
  const play = document.createElement("button");
  play.textContent = "▶";
  play.title = "play / pause";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = "0";
  slider.step = "1";
  slider.style.flex = "1";
  const label = document.createElement("span");
  bar.append(play, slider, label);
  container.appendChild(bar);

  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(50, width / height, 0.01, 1000);
  // Spark generates and sorts splats asynchronously and says when it needs a redraw (dirty).
  const spark = new SparkRenderer({ renderer });
  scene.add(spark);
  const sparkBusy = () => spark.dirty || spark.sorting || spark.sortDirty || spark.updateTimeoutId !== -1;
  const manifest = await (await fetch(viewUrl(apiBase, info, info.manifest || "manifest.json"))).json();
  const files = manifest.frames.map((f) => f.file);
  const root = new THREE.Group();
  scene.add(root);
  const meshes = await Promise.all(files.map(async (file) => {
    const bytes = await (await fetch(viewUrl(apiBase, info, file))).arrayBuffer();
    const mesh = new SplatMesh({ fileBytes: bytes, fileName: file });
    await mesh.initialized;
    // PLY frames hold OpenCV coordinates (y down, z forward): turn them into three.js ones (180
    // degrees about x). SPZ stores RUB (three.js) coordinates already, and Spark reads them as they are.
    if (!/\.spz$/i.test(file)) mesh.quaternion.set(1, 0, 0, 0);
    return mesh;
  }));
  slider.max = String(files.length - 1);

  const controls = new OrbitControls(camera, renderer.domElement);
  const box = meshes[0].getBoundingBox(true).applyMatrix4(new THREE.Matrix4().makeRotationFromQuaternion(meshes[0].quaternion));
  const centre = box.getCenter(new THREE.Vector3());
  if (manifest.cameras && manifest.cameras.length) {
    cameraFromManifest(manifest.cameras[0], camera);
    const forward = new THREE.Vector3(0, 0, -1).applyQuaternion(camera.quaternion);
    controls.target.copy(camera.position).addScaledVector(forward, camera.position.distanceTo(centre));
  } else {
    const size = box.getSize(new THREE.Vector3()).length() || 1;
    camera.position.copy(centre).add(new THREE.Vector3(0, size * 0.3, size * 1.2));
    controls.target.copy(centre);
  }
  controls.update();

  let t = 0;
  let playing = false;
  let last = 0;
  // Draw while playing, while Spark is busy, and for a moment after each change; an idle player
  // costs nothing.
  let drawUntil = 0;
  const touch = () => { drawUntil = performance.now() + 500; };
  const fps = manifest.fps || info.fps || 8;
  const show = (index) => {
    t = Math.max(0, Math.min(files.length - 1, index | 0));
    // Only the current timestep is in the scene (Spark then sorts just that one).
    root.clear();
    root.add(meshes[t]);
    slider.value = String(t);
    label.textContent = `t ${t + 1}/${files.length}`;
    renderer.render(scene, camera);
    touch();
  };
  slider.addEventListener("input", () => show(Number(slider.value)));
  const setPlaying = (on) => {
    playing = Boolean(on);
    play.textContent = playing ? "⏸" : "▶";
    touch();
  };
  play.addEventListener("click", () => setPlaying(!playing));
  controls.addEventListener("change", () => { renderer.render(scene, camera); touch(); });
  let alive = true;
  const loop = (now) => {
    if (!alive) return;
    if (playing && now - last > 1000 / fps) {
      last = now;
      show((t + 1) % files.length);
    } else if (playing || now < drawUntil || sparkBusy()) {
      renderer.render(scene, camera);
    }
    requestAnimationFrame(loop);
  };
  show(0);
  requestAnimationFrame(loop);
  return {
    canvas: renderer.domElement, slider, playButton: play, frames: files.length,
    get time() { return t; },
    get playing() { return playing; },
    get drawCount() { return renderer.info.render.frame; },
    setTime: show,
    setPlaying,
    render: () => renderer.render(scene, camera),
    dispose: () => { alive = false; meshes.forEach((m) => m.dispose()); renderer.dispose(); container.replaceChildren(); },
  };
}
