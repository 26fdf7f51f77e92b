"""Fixtures for the server tests: tiny checkpoints on disk, real uvicorn servers on free ports, and the random tiny
model the scheduler tests decode with."""

from __future__ import annotations

import dataclasses

import pytest

from mgrd.models import build_model
from mgrd.models.presets import init_checkpoint, tiny
from mgrd.serve.app import create_app, load_server

from .helpers import LIMITS, Live
from .scripted import scripted_checkpoint


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return init_checkpoint("tiny", tmp_path_factory.mktemp("serve") / "tiny", seed=0)


@pytest.fixture(scope="session")
def scripted_dir(tmp_path_factory):
    return scripted_checkpoint(tmp_path_factory.mktemp("serve") / "scripted")


@pytest.fixture(scope="session")
def random_live(tiny_dir):
    server = load_server(tiny_dir, served_model_name="tiny", **LIMITS)
    live = Live(create_app(server))
    yield live
    live.stop()
    server.scheduler.stop()


@pytest.fixture(scope="session")
def scripted_live(scripted_dir):
    server = load_server(scripted_dir, served_model_name="scripted", max_model_len=256)
    live = Live(create_app(server))
    yield live
    live.stop()
    server.scheduler.stop()


@pytest.fixture(scope="session")
def keyed_live(random_live):
    """The random server's model behind an API key (a second app sharing the same scheduler)."""
    live = Live(create_app(dataclasses.replace(random_live.server, api_key="sesame")))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def model(tok, ids):
    """The tiny preset with random weights (seed 2); greedy decoding runs past 200 tokens on the mixed prompts."""
    return build_model(tiny(len(tok), ids), seed=2).eval()
