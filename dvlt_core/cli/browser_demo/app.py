"""The browser demo's server: a viser page with the controls and the 3D view.

Every request goes the command line's way: the browser's choices (uploaded files, K, the
backend and its checkpoint) are put into a copy of the ``dvlt-reconstruct`` arguments and
run through :func:`dvlt_core.cli.reconstruct.reconstruct` and
:func:`~dvlt_core.cli.reconstruct.write_outputs`, so inputs are loaded, bounded and refused
exactly as on the command line, and the ``.glb`` offered for download is the file
``--glb`` writes. One reconstruction runs at a time; the loaded backend is kept for the next
request with the same backend and checkpoint. Every connected browser sees the same page.

A page served on an address other people can reach (not loopback) is *locked*: it runs the
server's own backend and checkpoint only (no file path or Hub id from the browser is ever
loaded) and its messages name no file of the server (paths are cut to their last part).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import logging
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from dvlt_core.backends import InferenceBackend, available_backends
from dvlt_core.cli.browser_demo.scene import draw_reconstruction, viewpoint
from dvlt_core.cli.browser_demo.uploads import UploadFolder, UploadRefusedError
from dvlt_core.cli.reconstruct import USER_ERRORS, load_backend, reconstruct, write_outputs
from dvlt_core.io.checkpoint import default_checkpoint
from dvlt_core.io.images import IMAGE_EXTENSIONS
from dvlt_core.io.video import VIDEO_EXTENSIONS
from dvlt_core.model.config import DEFAULT_NUM_STEPS
from dvlt_core.result import Reconstruction
from dvlt_core.viewer_exports.packages import require_viewer_package
from dvlt_core.viewer_exports.views import exported_views

LOG = logging.getLogger(__name__)
#: The default address: this machine only (reach it from elsewhere with an SSH tunnel).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ACCEPTED_FILES = ",".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))


def require_viser() -> ModuleType:
    """viser, or :class:`ViewerPackageMissingError` saying how to install it."""
    return require_viewer_package("viser", "the browser demo (--serve)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# An absolute POSIX path (not the "//host/..." of a URL): kept to its last part.
_SERVER_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s'\"/:,;()]+/)*([^\s'\"/:,;()]+)")


def without_server_paths(text: str) -> str:
    """``text`` with every absolute path cut to its last part (the file's own name)."""
    return _SERVER_PATH.sub(r"\1", text)


def check_bindable(host: str) -> None:
    """Raise :class:`OSError` unless this machine can listen on ``host`` (viser itself would
    retry the next port for ever on an address that belongs to no interface here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))


class BrowserDemo:
    """The demo page served at ``host:port`` (port: the next free one from it); ``args`` are
    parsed ``dvlt-reconstruct`` arguments, the defaults of every request. ``locked`` (default:
    ``host`` is not loopback): the page can change neither the backend nor the checkpoint,
    and shows no server path (module docstring)."""

    def __init__(self, args: argparse.Namespace, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, locked: bool | None = None) -> None:
        self._viser = require_viser()
        check_bindable(host)
        self.locked = not is_loopback(host) if locked is None else locked
        self._args = copy.copy(args)
        if self._args.checkpoint is None and self._args.backend == "torch":
            self._args.checkpoint = default_checkpoint()
        self._uploads = UploadFolder()
        self._out_root = Path(tempfile.mkdtemp(prefix="dvlt-demo-results-"))
        self._backend: tuple[tuple[str, str | None], InferenceBackend] | None = None
        self._busy = threading.Lock()
        self._drawn: list[Any] = []
        self._glb: bytes | None = None
        #: Set whenever a reconstruction request has finished (successfully or not).
        self.finished = threading.Event()
        #: The last line of the status box (tests and logs read it).
        self.status = ""
        self.server = self._viser.ViserServer(host=host, port=port, label="DVLT", verbose=False)
        self._build_gui()

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    @property
    def uploaded(self) -> list[Path]:
        return self._uploads.files

    def _build_gui(self) -> None:
        gui = self.server.gui
        gui.add_markdown(
            "Add images (one upload each) or one video, choose K and the backend, then "
            "**Reconstruct**."
        )
        upload = gui.add_upload_button("Add an image or a video", mime_type=ACCEPTED_FILES)
        self._upload_list = gui.add_markdown("No uploads yet.")
        clear = gui.add_button("Clear uploads")
        self._num_steps = gui.add_number(
            "K (loop steps)", self._args.num_steps or DEFAULT_NUM_STEPS, min=1, step=1
        )
        backend, checkpoint = self._args.backend, self._args.checkpoint or ""
        self._backend_choice = gui.add_dropdown(
            "Backend", [backend] if self.locked else available_backends(),
            initial_value=backend, disabled=self.locked,
        )
        self._checkpoint = gui.add_text(
            "Checkpoint", without_server_paths(checkpoint) if self.locked else checkpoint,
            disabled=self.locked,
            hint="the server's checkpoint (this page is reachable from other machines)"
            if self.locked else "local folder, .safetensors file or Hub id; for "
            "onnxruntime/tensorrt the folder dvlt-export wrote",
        )
        run = gui.add_button("Reconstruct")
        self._status = gui.add_markdown("")
        self._download = gui.add_button("Download .glb", disabled=True)
        self._depth_folder = gui.add_folder("Depth maps")
        self._depth_images: list[Any] = []

        upload.on_upload(lambda event: self._on_upload(event.target.value))
        clear.on_click(lambda _: self._on_clear())
        run.on_click(lambda _: self.run_request())
        self._download.on_click(lambda event: self._send_glb(event.client))

    def _set_status(self, text: str) -> None:
        if self.locked:
            text = without_server_paths(text)
        self.status = text
        self._status.content = text
        LOG.info("demo: %s", text)

    def _on_upload(self, uploaded: Any) -> None:
        try:
            path = self._uploads.add(uploaded.name, uploaded.content)
        except UploadRefusedError as exc:
            self._set_status(f"error: {exc}")
            return
        names = [p.name for p in self._uploads.files]
        self._upload_list.content = f"{len(names)} file(s): " + ", ".join(names)
        self._set_status(f"added {path.name}")

    def _on_clear(self) -> None:
        self._uploads.clear()
        self._upload_list.content = "No uploads yet."
        self._set_status("uploads cleared")

    def request_args(self) -> argparse.Namespace:
        """The ``dvlt-reconstruct`` arguments of a request made with the page as it is."""
        args = copy.copy(self._args)
        args.inputs = [str(p) for p in self._uploads.files]
        args.num_steps = int(self._num_steps.value)
        if not self.locked:  # locked: the server's own, whatever a browser sent
            args.backend = self._backend_choice.value
            args.checkpoint = self._checkpoint.value.strip() or None
        return args

    def _loaded_backend(self, args: argparse.Namespace) -> InferenceBackend:
        key = (args.backend, args.checkpoint)
        if self._backend is None or self._backend[0] != key:
            self._backend = None  # free the old model before loading the next
            self._set_status(f"loading the {args.backend} backend ...")
            self._backend = (key, load_backend(args))
        return self._backend[1]

    def run_request(self) -> None:
        """Reconstruct the uploads with the page's choices and show the result (what the
        Reconstruct button does); a second request while one runs is turned away."""
        if not self._busy.acquire(blocking=False):
            self._set_status("a reconstruction is running: wait for it to finish")
            return
        self.finished.clear()
        try:
            args = self.request_args()
            if not args.inputs:
                raise ValueError("nothing uploaded: add images or a video first")
            backend = self._loaded_backend(args)
            self._set_status(
                f"reconstructing {len(args.inputs)} file(s) with K={args.num_steps} ..."
            )
            recon = reconstruct(args, backend)
            self._show(recon, args)
        except USER_ERRORS as exc:
            self._set_status(f"error: {exc}")
        except Exception:  # the page stays usable; the traceback goes to the server's log
            LOG.exception("demo: reconstruction failed")
            self._set_status("error: the reconstruction failed; the server's log has the details")
        finally:
            self._busy.release()
            self.finished.set()

    def _show(self, recon: Reconstruction, args: argparse.Namespace) -> None:
        shutil.rmtree(self._out_root / "result", ignore_errors=True)
        out = self._out_root / "result"
        paths = write_outputs(recon, out, args.conf_threshold, keep_failed=args.keep_failed_views,
                              glb=True, metric=args.metric)
        self._glb = paths["glb"].read_bytes()
        points, colors = recon.point_cloud(args.conf_threshold,
                                           include_failed=args.keep_failed_views)
        views = exported_views(recon, args.keep_failed_views)
        for handle in self._drawn + self._depth_images:
            handle.remove()
        self._drawn = draw_reconstruction(self._viser, self.server.scene, recon, points, colors,
                                          views)
        with self._depth_folder:
            self._depth_images = [
                self.server.gui.add_image(np.asarray(Image.open(out / "depth" / f"{v.name}.png")),
                                          label=v.name)
                for v in recon.views
            ]
        position, target = viewpoint(points, recon, views)
        for client in self.server.get_clients().values():
            client.camera.up_direction = (0.0, -1.0, 0.0)
            client.camera.position = position
            client.camera.look_at = target
        self.server.initial_camera.position = position
        self.server.initial_camera.look_at = target
        self._download.disabled = False
        failed = f", pose fit failed for {', '.join(recon.failed_views)}" \
            if recon.failed_views else ""
        self._set_status(f"done: {len(recon.views)} view(s), K={recon.num_steps}, "
                         f"{len(points)} points, {recon.timings.total_ms:.0f} ms{failed}")

    def _send_glb(self, client: Any) -> None:
        if self._glb is not None and client is not None:
            client.send_file_download("scene.glb", self._glb, save_immediately=True)

    def close(self) -> None:
        """Stop the server and delete the uploads and results."""
        self.server.stop()
        self._uploads.close()
        shutil.rmtree(self._out_root, ignore_errors=True)
