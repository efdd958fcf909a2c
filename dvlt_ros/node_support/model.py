"""Loading the inference backend from the node's parameters (beside the running model,
on a background thread), and what to say about it (identity and licence) in diagnostics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dvlt_core.backends import InferenceBackend, create_backend
from dvlt_core.device import resolve_device
from dvlt_core.io.checkpoint import LICENCE_NOTICE, RELEASED_REPO
from dvlt_ros.node_support.diagnostics import gpu_memory_values
from dvlt_ros.node_support.health import ERROR, WARN
from dvlt_ros.pipeline.settings import RELOAD_PARAMETERS

OTHER_LICENCE = "weights from a user checkpoint: see that checkpoint's licence"
NO_WEIGHTS = "no checkpoint: the backend was built without released weights"


@dataclass(frozen=True)
class ModelSettings:
    """The parameters that select the model; a change of any of them reloads it.
    ``torch_compile``: compile the torch backend's model (refused by the settings' checks
    for any other backend)."""

    backend: str
    checkpoint: str
    device: str
    precision: str
    torch_compile: bool = False

    @classmethod
    def from_params(cls, params) -> ModelSettings:
        """The settings the parameters ``params`` name (:data:`RELOAD_PARAMETERS`)."""
        return cls(str(params["backend"]), str(params["checkpoint"]), str(params["device"]),
                   str(params["precision"]), bool(params["torch_compile"]))


@dataclass(frozen=True)
class LoadedModel:
    backend: InferenceBackend
    identity: str
    licence: str
    load_ms: float


def is_released(checkpoint: str) -> bool:
    """Whether ``checkpoint`` names the released weights (non-commercial licence)."""
    return checkpoint.split("@")[0].strip().lower() == RELEASED_REPO or (
        f"/{RELEASED_REPO}/" in checkpoint.lower()
    )


def describe(backend: InferenceBackend, checkpoint: str) -> tuple[str, str]:
    """(identity, licence) of a backend: checkpoint, runtime, architecture, device,
    precision and whether its model is compiled (``torch.compile``)."""
    parts = [checkpoint or "(no checkpoint)", backend.name, f"device {backend.device}"]
    model = getattr(backend, "model", None)
    config = getattr(model, "config", None)
    if config is not None:
        parts.insert(2, f"{config.patch_embed}, img_size {config.img_size}")
    precision = getattr(backend, "precision", None)
    if precision:
        parts.append(precision)
    if getattr(backend, "torch_compile", False):
        parts.append("torch.compile")
    if not checkpoint:
        licence = NO_WEIGHTS
    else:
        licence = LICENCE_NOTICE if is_released(checkpoint) else OTHER_LICENCE
    return ", ".join(parts), licence


def load_backend(settings: ModelSettings) -> LoadedModel:
    """Build the backend; raises (CheckpointError, ValueError, OSError, ...) with the
    loader's message when it cannot."""
    start = time.perf_counter()
    # Only the torch backend takes the option; the settings' checks refuse it elsewhere.
    options = {"torch_compile": True} if settings.torch_compile else {}
    backend = create_backend(
        settings.backend,
        checkpoint=settings.checkpoint,
        device=str(resolve_device(settings.device)),
        precision=settings.precision,
        **options,
    )
    identity, licence = describe(backend, settings.checkpoint)
    return LoadedModel(backend, identity, licence, (time.perf_counter() - start) * 1e3)


@dataclass(frozen=True)
class LoadOutcome:
    """The end of one load: the model, or why there is none."""

    settings: ModelSettings
    model: LoadedModel | None
    error: str | None = None


class ModelLoader:
    """Loads models on a daemon thread, so that the node keeps reconstructing with the
    model it has while the next one loads (read, downloaded, built).

    One load runs at a time. A request made during a load waits for it; the newest such
    request wins, and the running load's outcome is then dropped (its settings are no
    longer wanted), as it is after :meth:`discard`. ``on_done`` is called (on the loading
    thread) when an outcome is ready for :meth:`take`.
    """

    def __init__(self, on_done: Callable[[], None],
                 load: Callable[[ModelSettings], LoadedModel] = load_backend) -> None:
        self._on_done = on_done
        self._load = load
        self._lock = threading.Lock()
        self._running: ModelSettings | None = None
        self._queued: ModelSettings | None = None
        self._discard_running = False
        self._outcome: LoadOutcome | None = None

    def request(self, settings: ModelSettings) -> None:
        """Load ``settings`` now, or after the running load."""
        with self._lock:
            self._outcome = None
            if self._running is not None:
                self._queued, self._discard_running = settings, True
                return
            self._start(settings)

    def discard(self) -> None:
        """Want nothing of the running or queued loads any more."""
        with self._lock:
            self._queued, self._outcome = None, None
            self._discard_running = self._running is not None

    @property
    def loading(self) -> ModelSettings | None:
        """The settings being (or about to be) loaded, or None."""
        with self._lock:
            return self._queued or self._running

    def take(self) -> LoadOutcome | None:
        """The outcome of the last load, once (None while loading or after taking it)."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
            return outcome

    def _start(self, settings: ModelSettings) -> None:  # with the lock held
        self._running, self._discard_running = settings, False
        threading.Thread(target=self._run, args=(settings,), name="dvlt-model-load",
                         daemon=True).start()

    def _run(self, settings: ModelSettings) -> None:
        try:
            outcome = LoadOutcome(settings, self._load(settings))
        except Exception as exc:  # every loader failure is reported, the node stays up
            outcome = LoadOutcome(settings, None, str(exc) or type(exc).__name__)
        with self._lock:
            self._running = None
            if self._queued is not None:
                queued, self._queued = self._queued, None
                self._start(queued)
                return
            if self._discard_running:
                self._discard_running = False
                return
            self._outcome = outcome
        self._on_done()


class ModelSwitch:
    """The node's model: the running one, and the one the parameters name loading beside
    it (swapped in between cycles, so a cycle always runs on one model). A failed load is
    reported on ``problems`` and keeps the running model. With an ``injected`` backend
    (in-process use) nothing is ever loaded."""

    def __init__(self, problems, logger, on_done: Callable[[], None],
                 injected: InferenceBackend | None = None) -> None:
        self.problems = problems
        self.logger = logger
        self.injected = injected
        self.model: LoadedModel | None = None
        self.settings: ModelSettings | None = None
        self.loader = None if injected is not None else ModelLoader(on_done=on_done)

    @property
    def loading(self) -> ModelSettings | None:
        return self.loader.loading if self.loader is not None else None

    def injected_model(self, checkpoint: str) -> LoadedModel:
        identity, licence = describe(self.injected, checkpoint)
        return LoadedModel(self.injected, identity, licence, 0.0)

    def request(self, params) -> None:
        """Start loading the model ``params`` name, beside the running one."""
        if self.injected is not None:
            self.logger.warning("the backend was passed in by the caller: backend/checkpoint/"
                                "device/precision/torch_compile changes are ignored")
            return
        settings = ModelSettings.from_params(params)
        if settings == self.settings:  # back to the running model's settings
            if self.loader.loading is not None:
                self.logger.info(f"keeping the running model; the load of "
                                 f"{self.loader.loading} is dropped")
            self.loader.discard()
            self.problems.clear("model", "model_reload_failed")
            return
        what = "loading" if self.model is None else "loading (beside the running model)"
        self.logger.info(f"{what}: {settings}")
        self.loader.request(settings)

    def changed(self, changes, params) -> None:
        """After parameter ``changes``: reload when one of them selects the model."""
        if any(name in changes for name in RELOAD_PARAMETERS):
            self.request(params)

    def take_loaded(self) -> LoadOutcome | None:
        """A model that finished loading (to install), or None; a failed load is reported
        here and also gives None."""
        outcome = self.loader.take() if self.loader is not None else None
        if outcome is None:
            return None
        if outcome.model is not None:
            self.logger.info(
                f"model loaded in {outcome.model.load_ms:.0f} ms: {outcome.model.identity}")
            return outcome
        s = outcome.settings
        retry = ("Set the checkpoint parameter (ros2 param set <node> checkpoint <Hub id | "
                 "directory | file>) to retry")
        failure = f"cannot load {s.backend} model from checkpoint '{s.checkpoint}': {outcome.error}"
        if self.model is None:
            message = f"{failure}. {retry}"
            self.problems.report("model", "checkpoint", ERROR, message)
            self.logger.error(message)
        else:
            message = (f"{failure}. Still reconstructing with the running model "
                       f"({self.model.identity}). {retry}")
            self.problems.report("model", "model_reload_failed", WARN, message)
            self.logger.warning(message)
        return None

    def adopt(self, model: LoadedModel, settings: ModelSettings | None) -> None:
        """Make ``model`` the running one."""
        self.problems.clear("model")
        self.model, self.settings = model, settings

    def values(self) -> dict[str, object]:
        """The model's diagnostics values (identity, licence, GPU memory, loading)."""
        values: dict[str, object] = {}
        if self.model is not None:
            values.update({"model": self.model.identity, "licence": self.model.licence})
            values.update(gpu_memory_values(self.model.backend.device))
        else:
            values["model"] = "not loaded"
        loading = self.loading
        if loading is not None:
            values["model_loading"] = f"{loading.backend} from checkpoint '{loading.checkpoint}'"
        return values
