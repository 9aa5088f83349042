"""The KServe v2 / Open Inference Protocol ``inference.GRPCInferenceService`` over the raw model
tensors, so that tritonclient and other OIP clients work unchanged."""

# ruff: noqa: N802 (servicer methods carry the RPC names of the proto)

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from lipsync_contract.modelio import TensorSpec
from lipsync_server import server_version
from lipsync_server._generated.inference import grpc_service_pb2 as pb
from lipsync_server._generated.inference import grpc_service_pb2_grpc as pb_grpc
from lipsync_server.dataplane import DataPlane
from lipsync_server.errors import InvalidRequestError
from lipsync_server.services.status import check_size, deadline_of, unary_rpc
from lipsync_server.validation import decode_tensor, oip_datatype

Context = grpc.aio.ServicerContext[object, object]
MODEL_VERSION = "1"
_PLATFORMS = {"tensorrt": "tensorrt_plan"}


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=oip_datatype(spec), shape=[-1, *spec.shape]
    )


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def _check_model(self, name: str, version: str) -> None:
        if not name:
            raise InvalidRequestError("no model name given")
        self.plane.check_model(name)
        if version not in ("", MODEL_VERSION):
            raise InvalidRequestError(
                f"model {name!r} has no version {version!r} (only {MODEL_VERSION})"
            )

    @unary_rpc()
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @unary_rpc()
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    @unary_rpc()
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    @unary_rpc()
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="lipsync", version=server_version(), extensions=[])

    @unary_rpc()
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        plane = self.plane
        self._check_model(request.name, request.version)
        contract = plane.contract
        return pb.ModelMetadataResponse(
            name=plane.model_name,
            versions=[MODEL_VERSION],
            platform=_PLATFORMS.get(plane.backend_info.kind, "onnxruntime_onnx"),
            inputs=[_tensor_metadata(spec) for spec in contract.inputs],
            outputs=[_tensor_metadata(contract.output)],
        )

    @unary_rpc(inference=True)
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        plane = self.plane
        check_size(request, plane.settings.max_message_bytes)
        self._check_model(request.model_name, request.model_version)
        # A large request takes most of a second to decode: not on the event loop.
        arrays = await asyncio.to_thread(self._decode_inputs, request)
        contract = plane.contract
        image, audio = arrays[contract.image.name], arrays[contract.audio.name]
        if image.shape[0] != audio.shape[0]:
            raise InvalidRequestError(
                f"inputs have different batch sizes: {contract.image.name!r} {image.shape[0]}, "
                f"{contract.audio.name!r} {audio.shape[0]}"
            )
        for requested in request.outputs:
            if requested.name != contract.output.name:
                raise InvalidRequestError(
                    f"unknown output {requested.name!r}; the model has {contract.output.name!r}"
                )
        output = await plane.infer_tensors(image, audio, deadline_of(context))
        response = pb.ModelInferResponse(
            model_name=plane.model_name, model_version=MODEL_VERSION, id=request.id
        )
        response.outputs.add(
            name=contract.output.name,
            datatype=oip_datatype(contract.output),
            shape=list(output.shape),
        )
        response.raw_output_contents.append(np.ascontiguousarray(output, "<f4").tobytes())
        return response

    def _decode_inputs(self, request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
        plane = self.plane
        specs = {spec.name: spec for spec in plane.contract.inputs}
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidRequestError(
                f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs"
            )
        arrays: dict[str, np.ndarray] = {}
        for position, tensor in enumerate(request.inputs):
            spec = specs.get(tensor.name)
            if spec is None:
                raise InvalidRequestError(
                    f"unexpected input {tensor.name!r}; the model takes {', '.join(sorted(specs))}"
                )
            if tensor.name in arrays:
                raise InvalidRequestError(f"input {tensor.name!r} given twice")
            arrays[tensor.name] = decode_tensor(
                spec,
                tensor.datatype,
                list(tensor.shape),
                raw=raw[position] if raw else None,
                fp32_contents=tensor.contents.fp32_contents,
                max_batch=plane.settings.max_batch_size,
            )
        missing = [name for name in specs if name not in arrays]
        if missing:
            raise InvalidRequestError(f"missing input {missing[0]!r}")
        return arrays

    @unary_rpc()
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        plane = self.plane
        response = pb.RepositoryIndexResponse()
        if plane.ready or not request.ready:
            response.models.add(
                name=plane.model_name,
                version=MODEL_VERSION,
                state="READY" if plane.ready else "UNAVAILABLE",
                reason="" if plane.ready else "server is shutting down",
            )
        return response
