"""Generates the Python gRPC stubs in `tidal/_proto` from the repository's `proto/` files.

Run `python -m tidal._protogen` (needs grpcio-tools) after changing a `.proto` file.

The generated modules register their descriptors in a private pool (`tidal._proto.POOL`)
instead of protobuf's default one: other KServe clients in the same process (tritonclient)
register messages of the same `inference` package, and the default pool refuses a second,
different definition of a symbol.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

PROTO_FILES = ("model_config.proto", "grpc_service.proto")
PACKAGE_DIR = Path(__file__).resolve().parent / "_proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _rewrite(text: str) -> str:
    # Sibling modules are imported relative to the package, not as top-level modules.
    text = re.sub(r"^import (\w+_pb2) as (\w+)$", r"from . import \1 as \2", text, flags=re.M)
    text = re.sub(r"^from (\w+_pb2) import", r"from .\1 import", text, flags=re.M)
    text = text.replace("_descriptor_pool.Default()", "_private_pool.POOL")
    if "_private_pool.POOL" in text:
        text = text.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            "from google.protobuf import descriptor_pool as _descriptor_pool  # noqa: F401\n"
            "from . import _pool as _private_pool\n",
        )
    return text


def generate(proto_dir: Path, out_dir: Path) -> list[Path]:
    """Compile `proto_dir`'s files into `out_dir`; returns the files written."""
    from grpc_tools import protoc  # a development dependency only

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(proto_dir / name) for name in PROTO_FILES),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {proto_dir}")
        written = []
        for path in sorted(Path(tmp).iterdir()):
            empty_grpc = path.name.endswith("_grpc.py") and "Stub:" not in path.read_text()
            if path.name.endswith(GENERATED_SUFFIXES) and not empty_grpc:
                target = out_dir / path.name
                target.write_text(_rewrite(path.read_text()))
                written.append(target)
    return written


def main() -> int:
    """Regenerate the stubs from the `proto/` folder beside the package's source tree."""
    proto_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR.parents[2] / "proto"
    for path in generate(proto_dir, PACKAGE_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
