"""The eligibility rule (:func:`judge`): which peer may take a job's tasks, and why not."""

from __future__ import annotations

import pytest

from p2pcluster._proto.eligibility import (
    Dist,
    Fit,
    JobNeeds,
    PeerEnv,
    judge,
    normalize,
    same_release,
)
from p2pcluster._proto.meta import NodeMeta

NUMPY = JobNeeds("3.11.7", (Dist("numpy", "2.5.5"),))


@pytest.mark.parametrize(("have", "want", "strict", "ok"), [
    ("2.5.1", "2.5.5", False, True),
    ("2.5.5", "2.5.5", True, True),
    ("2.5.1", "2.5.5", True, False),
    ("1.26.4", "2.5.5", False, False),
    ("2.6.0", "2.5.5", False, False),
    ("2.5", "2.5.5", False, True),
    ("2.5.0rc1", "2.5.5", False, True),
    ("1!2.5.0", "2.5.5", False, True),
    ("dev", "2.5.5", False, False),
    ("dev", "dev", False, True),
])
def test_same_release(have: str, want: str, strict: bool, ok: bool) -> None:
    assert same_release(have, want, strict) is ok


def test_normalize_as_pep_503() -> None:
    assert normalize("Scikit_Learn") == "scikit-learn"
    assert normalize("zope.interface") == "zope-interface"


def test_a_peer_with_the_same_minor_versions_fits() -> None:
    verdict = judge(NUMPY, PeerEnv("3.11.2", frozenset(), {"numpy": "2.5.1"}))
    assert verdict.ok and verdict.fit is Fit.OK and verdict.settled


@pytest.mark.parametrize(("env", "reasons"), [
    (PeerEnv("3.11.7", frozenset(), {"numpy": ""}), ("numpy missing",)),
    (PeerEnv("3.11.7", frozenset(), {"numpy": "1.26.4"}), ("numpy 1.26.4 (here 2.5.5)",)),
    (PeerEnv("3.12.1", frozenset(), {"numpy": "2.5.5"}), ("Python 3.12.1 (here 3.11.7)",)),
])
def test_a_peer_that_differs_is_excluded_with_the_reason(env: PeerEnv,
                                                         reasons: tuple[str, ...]) -> None:
    verdict = judge(NUMPY, env)
    assert verdict.fit is Fit.NO and not verdict.ok
    assert verdict.reasons == reasons


def test_strict_needs_the_very_same_versions() -> None:
    strict = JobNeeds("3.11.7", (Dist("numpy", "2.5.5"),), strict=True)
    assert judge(strict, PeerEnv("3.11.7", frozenset(), {"numpy": "2.5.5"})).ok
    assert judge(strict, PeerEnv("3.11.6", frozenset(), {"numpy": "2.5.5"})).reasons == (
        "Python 3.11.6 (here 3.11.7)",)


def test_an_unknown_version_is_unknown_never_guessed() -> None:
    verdict = judge(NUMPY, PeerEnv("3.11.7"))
    assert verdict.fit is Fit.UNKNOWN and not verdict.ok and not verdict.settled
    assert verdict.unknown == ("numpy",)
    assert judge(JobNeeds("3.11.7"), PeerEnv()).fit is Fit.UNKNOWN


def test_tags_are_placement_not_environment() -> None:
    gpu = JobNeeds("3.11.7", tags=("gpu",))
    plain = judge(gpu, PeerEnv("3.11.7", frozenset({"bigmem"})))
    assert plain.fit is Fit.OK and not plain.tags and not plain.ok
    assert plain.reasons == ("no tag gpu",)
    assert judge(gpu, PeerEnv("3.11.7", frozenset({"gpu", "bigmem"}))).ok
    assert not judge(gpu, PeerEnv("3.11.7")).settled  # tags not known yet


def test_a_job_that_needs_nothing_fits_anywhere() -> None:
    assert judge(JobNeeds(), PeerEnv()).ok


def test_metadata_carries_the_environment_in_few_bytes() -> None:
    meta = NodeMeta(4, 0, ("gpu",), "0.1.0", 1800000000, "CPython 3.11.7", "Linux",
                    "x86_64")
    data = meta.encode()
    assert NodeMeta.decode(data) == meta
    assert meta.python_version == "3.11.7"
    assert len(data) - len(NodeMeta(4, 0, ("gpu",), "0.1.0", 1800000000).encode()) < 48
    assert NodeMeta().python_version is None
