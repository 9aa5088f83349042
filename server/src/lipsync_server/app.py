"""Building and running the server: model instances, avatar, data plane, gRPC services, metrics,
health, reflection, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from prometheus_client import start_http_server

from lipsync_contract.digest import verify_sha256
from lipsync_contract.modelio import preset
from lipsync_core.backends import BackendConfig, load_backend
from lipsync_core.contract_checks import check_onnx
from lipsync_server._generated.inference import grpc_service_pb2 as inference_pb2
from lipsync_server._generated.inference import grpc_service_pb2_grpc as inference_pb2_grpc
from lipsync_server._generated.lipsync.v1 import lipsync_pb2, lipsync_pb2_grpc
from lipsync_server.audio import check_window_shape
from lipsync_server.avatar.store import AvatarStore
from lipsync_server.config import ServerSettings
from lipsync_server.dataplane import DataPlane
from lipsync_server.postprocess import load_postprocessor
from lipsync_server.security import BearerTokenInterceptor, server_credentials
from lipsync_server.services.kserve import InferenceService
from lipsync_server.services.lipsync import LipSyncService

log = logging.getLogger(__name__)

LIPSYNC_SERVICE = lipsync_pb2.DESCRIPTOR.services_by_name["LipSync"].full_name
INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_SERVICES = ("", LIPSYNC_SERVICE, INFERENCE_SERVICE)


def runs_resident(backend: object) -> bool:
    """Whether ``backend`` takes and returns device tensors (the PyTorch backends)."""
    return callable(getattr(backend, "run_resident", None))


def load_data_plane(settings: ServerSettings) -> DataPlane:
    """Load the model instances and the avatar (slow: seconds)."""
    contract = preset(settings.io_preset)
    check_window_shape(contract)
    verify_sha256(settings.model, settings.model_sha256, "model artifact")
    if settings.audio_encoder is not None:
        verify_sha256(
            settings.audio_encoder, settings.audio_encoder_sha256, "audio encoder artifact"
        )
    if settings.model.suffix == ".onnx":
        check_onnx(contract, settings.model)
    started = time.monotonic()
    config = BackendConfig(
        kind=settings.backend,
        intra_op_threads=settings.intra_op_threads,
        max_batch=settings.max_batch_size,
        device=settings.device,
        torch_compile=settings.torch_compile,
        cuda_graphs=settings.cuda_graphs,
    )
    backends = [load_backend(settings.model, contract, config) for _ in range(settings.instances)]
    encoder = None
    if settings.audio_encoder is not None:
        from lipsync_server.encoder import load_encoder_backend

        encoder = load_encoder_backend(settings, settings.audio_encoder)
    store = AvatarStore.load(settings.avatar)
    model_device = backends[0].describe().device
    postprocessor = load_postprocessor(settings.postprocess, store, model_device)
    log.info("compositing and JPEG on %s (%s)", postprocessor.device, postprocessor.kind)
    resident = None
    if postprocessor.kind == "torch" and all(runs_resident(backend) for backend in backends):
        from lipsync_server.resident import ResidentInputs

        resident = ResidentInputs(store, model_device, settings.cuda_graphs)
        log.info(
            "model inputs and outputs stay on %s: only audio and encoded frames move", model_device
        )
    log.info(
        "loaded %d instance(s)%s and the avatar in %.1f s",
        settings.instances,
        " and the audio encoder" if encoder else "",
        time.monotonic() - started,
    )
    return DataPlane(
        settings, contract, backends, store, encoder, postprocessor=postprocessor, resident=resident
    )


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """One pool with every served service (the OIP messages live in a private pool)."""
    pool = descriptor_pool.DescriptorPool()
    for module in (lipsync_pb2, inference_pb2, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def grpc_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments for the server's message and connection limits."""
    limit = 2 * settings.max_message_bytes  # requests between 1x and 2x get a clear message
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", settings.max_concurrent_streams),
        # The server pings a quiet connection to find dead clients; a client's pings closer than
        # the minimum count as strikes, and the third closes its connection (GOAWAY).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(settings.min_client_ping_seconds)),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    if settings.max_connection_idle_seconds:
        options.append(("grpc.max_connection_idle_ms", _ms(settings.max_connection_idle_seconds)))
    if settings.max_connection_age_seconds:
        options.append(("grpc.max_connection_age_ms", _ms(settings.max_connection_age_seconds)))
    return options


def _transport(settings: ServerSettings) -> str:
    if settings.tls_client_ca_file is not None:
        return "mutual TLS"
    return "TLS" if settings.tls_cert_file is not None else "plaintext"


class LipSyncServer:
    """The running server. ``start()``, then ``wait_for_termination()`` or ``shutdown()``."""

    def __init__(self, settings: ServerSettings, plane: DataPlane) -> None:
        self.settings = settings
        self.plane = plane
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        interceptors = []
        if settings.auth_token_file is not None:
            interceptors.append(BearerTokenInterceptor(settings.auth_token_file))
        self._server = grpc.aio.server(
            options=grpc_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            interceptors=interceptors,
        )
        lipsync_pb2_grpc.add_LipSyncServicer_to_server(LipSyncService(plane), self._server)
        inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceService(plane), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if settings.reflection:
            reflection.enable_server_reflection(
                [LIPSYNC_SERVICE, INFERENCE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME],
                self._server,
                pool=_reflection_pool(),
            )
        address = f"{settings.host}:{settings.grpc_port}"
        credentials = server_credentials(settings)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        self._health_server, self.health_port = self._health_only_server()
        self._stopped = asyncio.Event()
        self._metrics_http: object | None = None

    def _health_only_server(self) -> tuple[grpc.aio.Server | None, int | None]:
        """Plaintext grpc.health.v1 alone, for probes that speak neither TLS nor tokens."""
        if self.settings.health_port is None:
            return None, None
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = server.add_insecure_port(f"{self.settings.host}:{self.settings.health_port}")
        return server, port

    async def start(self) -> None:
        await self.plane.start()
        await self._server.start()
        if self._health_server is not None:
            await self._health_server.start()
        if self.settings.metrics_port:
            server, _thread = start_http_server(
                self.settings.metrics_port, self.settings.host, registry=self.plane.metrics.registry
            )
            self._metrics_http = server
        for service in HEALTH_SERVICES:
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "serving model %r on gRPC port %d (%s%s; health-only port %s, metrics port %s)",
            self.settings.model_name,
            self.port,
            _transport(self.settings),
            ", bearer token" if self.settings.auth_token_file else "",
            self.health_port if self.health_port is not None else "off",
            self.settings.metrics_port or "off",
        )

    async def shutdown(self) -> bool:
        """Drain: health NOT_SERVING, new calls refused, in-flight calls finish within the grace
        period; then stop. Returns True when every call finished in time."""
        log.info("shutting down: draining for up to %.1f s", self.settings.shutdown_grace_seconds)
        await self.health.enter_graceful_shutdown()
        drained = await self.plane.drain(self.settings.shutdown_grace_seconds)
        await self._server.stop(grace=1.0)
        if self._health_server is not None:
            await self._health_server.stop(grace=None)
        await self.plane.close()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()  # type: ignore[attr-defined]
        self._stopped.set()
        log.info("stopped (%s)", "all calls finished" if drained else "grace period expired")
        return drained

    async def serve_until_signal(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await self.shutdown()


async def serve(settings: ServerSettings) -> None:
    plane = load_data_plane(settings)
    server = LipSyncServer(settings, plane)
    await server.start()
    await server.serve_until_signal()
