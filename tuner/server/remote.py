"""A tritonserver someone else runs, reached at a URL, in explicit model-control mode.

Candidates travel with their load request: the config override and every model file's content
(Triton's load API takes them as `file:<path>` parameters), so the server needs no shared
filesystem. The server's own models are left alone: a model this search did not load is never
unloaded or replaced, and the models it loaded are unloaded when it stops. A model it loaded
carries the study's name as a config parameter, so a search resumed after a crash recognises
its own leftover.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tuner.errors import TrialError, TunerError
from tuner.render import to_json
from tuner.server import ModelPackage

OWNER_PARAMETER = "tuner.study"
DEFAULT_METRICS_PORT = 8002
_NOT_EXPLICIT = "not allowed if polling is enabled"  # Triton's reply to load/unload outside explicit mode


def not_explicit_error(url: str) -> TunerError:
    return TunerError(f"the server at {url} is not in explicit model-control mode, so tuner cannot load "
                      "candidates on it: restart it with --model-control-mode=explicit (its models stay "
                      "loadable with --load-model=<name> or --load-model=*)")


class RemoteServer:
    """Loads candidates onto the running server at `url` (HTTP host:port); perf_analyzer uses `grpc_url`."""

    def __init__(self, url: str | None, grpc_url: str | None, study: str, startup_timeout_s: float = 60.0,
                 load_timeout_s: float = 180.0, metrics_url: str | None = None):
        if not url or not grpc_url:
            raise TunerError("remote mode needs the running server's endpoints: set server.url (HTTP host:port) "
                             "and server.grpc_url (gRPC host:port) in the experiment")
        self.http_url = url.removeprefix("http://").rstrip("/")
        self.grpc_url = grpc_url.removeprefix("grpc://")
        host = self.http_url.rsplit(":", 1)[0]
        self.metrics_url = metrics_url or f"http://{host}:{DEFAULT_METRICS_PORT}/metrics"
        self.study = study
        self.startup_timeout_s = startup_timeout_s
        self.load_timeout_s = load_timeout_s
        self.loaded: set[str] = set()  # models this search loaded: the only ones it may unload
        self._checked = False

    @contextmanager
    def _client(self, timeout: float = 10.0) -> Iterator[httpclient.InferenceServerClient]:
        # Closed after each use: no idle connection of ours lingers on someone else's server.
        client = httpclient.InferenceServerClient(self.http_url, connection_timeout=timeout, network_timeout=timeout)
        try:
            yield client
        finally:
            client.close()

    def start(self) -> "RemoteServer":
        """Wait until the server is live, then check that it is in explicit model-control mode."""
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.is_alive():
            if time.monotonic() > deadline:
                raise TunerError(f"no live tritonserver at {self.http_url} after {self.startup_timeout_s:.0f} s: "
                                 "check server.url and that the server is running")
            time.sleep(0.5)
        self._require_explicit_mode()
        self._checked = True
        return self

    def _require_explicit_mode(self) -> None:
        """Load a model name that cannot exist: explicit mode answers "failed to load", other modes refuse.

        Nothing gets loaded either way, and no model of the server is touched.
        """
        try:
            with self._client() as client:
                client.load_model(f"tuner-mode-probe-{uuid.uuid4().hex[:12]}")
        except InferenceServerException as exc:
            if _NOT_EXPLICIT in (exc.message() or ""):
                raise not_explicit_error(self.http_url) from None

    def is_alive(self) -> bool:
        try:
            with self._client(2.0) as client:
                return client.is_server_live()
        except Exception:  # refused, reset, timed out: not alive
            return False

    def load(self, package: ModelPackage) -> None:
        config = json.loads(to_json(package.config_pbtxt))
        config.setdefault("parameters", {})[OWNER_PARAMETER] = {"string_value": self.study}
        try:
            files = {f"file:{relative}": source.read_bytes() for relative, source in package.files.items()}
        except OSError as exc:
            raise TrialError(f"cannot read a model file to send: {exc}") from None
        with self._client(self.load_timeout_s) as client:
            self._require_ours(client, package.name)
            try:
                client.load_model(package.name, config=json.dumps(config), files=files)
            except InferenceServerException as exc:
                if _NOT_EXPLICIT in (exc.message() or ""):
                    raise not_explicit_error(self.http_url) from None
                raise TrialError(f"tritonserver refused to load the candidate: {exc.message()}") from None
            except Exception as exc:  # timeouts, broken connection when the server dies mid-load
                raise TrialError(f"loading the candidate failed: {type(exc).__name__}: {exc}") from None
            finally:
                self.loaded.add(package.name)  # even a failed load may leave a version behind to unload

    def _require_ours(self, client: httpclient.InferenceServerClient, name: str) -> None:
        """Refuse to replace a model the server already serves unless this study loaded it."""
        if name in self.loaded:
            return
        try:
            config = client.get_model_config(name)
        except InferenceServerException:
            return  # not loaded: the name is free
        owner = config.get("parameters", {}).get(OWNER_PARAMETER, {}).get("string_value")
        if owner != self.study:
            raise TunerError(f"the server at {self.http_url} already serves a model named {name!r}; tuner will "
                             "not replace it: tune a copy under another name (e.g. a model directory or "
                             ".onnx file named differently)")

    def unload(self, name: str) -> None:
        if name not in self.loaded:
            return  # never unload what this search did not load
        try:
            with self._client() as client:
                client.unload_model(name)
        except Exception:  # unloading a model that failed to load is not an error worth reporting
            pass
        self.loaded.discard(name)

    def stop(self) -> None:
        """Unload what this search loaded; the server itself keeps running."""
        for name in sorted(self.loaded):
            self.unload(name)

    def backends(self) -> list[str]:
        """A remote server's backends cannot be listed through the API; its python backend serves
        the adapters (the model files travel with each load)."""
        return ["python"]

    def __enter__(self) -> "RemoteServer":
        # `with server.start():` enters an already checked server: check only once.
        return self if self._checked else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
