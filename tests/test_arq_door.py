"""arq's private hooks that crawlq relies on (crawlq/arq_door.py) are still there with the parameters it uses,
and arq's key prefixes are still the ones crawlq/keys.py spells. An arq upgrade that moves one fails here."""

from __future__ import annotations

import inspect

import arq.constants
import pytest
from arq import Worker

from crawlq import arq_door, keys


@pytest.mark.parametrize("name", sorted(arq_door.HOOKS))
def test_each_private_hook_keeps_its_signature(name: str) -> None:
    hook = getattr(Worker, name, None)
    assert hook is not None, f"arq.Worker.{name} is gone: crawlq/arq_door.py relies on it (see its docstring)"
    parameters = tuple(inspect.signature(hook).parameters)
    assert parameters == arq_door.HOOKS[name], (
        f"arq.Worker.{name} now takes {parameters}, crawlq/arq_door.py relies on {arq_door.HOOKS[name]}"
    )


@pytest.mark.parametrize("name", arq_door.ATTRIBUTES)
def test_each_private_attribute_is_still_set_by_arq(name: str) -> None:
    assert f"self.{name} =" in inspect.getsource(Worker.__init__) or f"self.{name}:" in inspect.getsource(
        Worker.__init__
    ), f"arq.Worker.__init__ no longer sets self.{name}: crawlq/arq_door.start_job relies on it"


def test_serialize_job_keeps_its_signature() -> None:
    parameters = tuple(inspect.signature(arq_door.serialize_job).parameters)
    assert parameters[:5] == ("function_name", "args", "kwargs", "job_try", "enqueue_time_ms"), parameters
    assert "serializer" in parameters


def test_arq_key_prefixes_are_arqs() -> None:
    assert keys.ARQ_JOB_PREFIX == arq.constants.job_key_prefix
    assert keys.ARQ_IN_PROGRESS_PREFIX == arq.constants.in_progress_key_prefix
    assert keys.ARQ_RESULT_PREFIX == arq.constants.result_key_prefix
    assert keys.ARQ_RETRY_PREFIX == arq.constants.retry_key_prefix


def test_failure_reason_names_arqs_messages() -> None:
    from crawlq.codec import pack
    from crawlq.models import ErrorClass

    def stored(**result: object) -> bytes:
        return pack({"s": False, "t": 3, "r": result})

    assert arq_door.failure_reason(stored(exc="JobExecutionFailed", msg="max 3 retries exceeded"))[0] is (  # type: ignore[index]
        ErrorClass.MAX_TRIES
    )
    assert arq_door.failure_reason(stored(exc="JobExecutionFailed", msg="job expired"))[0] is ErrorClass.EXPIRED  # type: ignore[index]
    assert arq_door.failure_reason(stored(exc="TimeoutError", msg=""))[0] is ErrorClass.TIMEOUT  # type: ignore[index]
    assert arq_door.failure_reason(pack({"s": True, "r": None})) is None
    assert arq_door.failure_reason(None) is None
