"""LipSync inference server: gRPC frame streaming with dynamic batching, compositing, KServe v2."""


def server_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lipsync-server")
    except PackageNotFoundError:
        return "0+unknown"
