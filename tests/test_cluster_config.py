"""The cluster files pass Ray's own cluster-config validation (the checks
`ray up` runs: JSON schema, then prepare_config + validate_config) and install
this project with token authentication left on."""

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
FILES = ["cluster.yaml", "cluster_local.yaml"]


def schema():
    import ray

    return json.loads((Path(os.path.dirname(ray.__file__)) / "autoscaler" / "ray-schema.json").read_text())


@pytest.mark.parametrize("name", FILES)
def test_passes_rays_cluster_validation(name):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / name).read_text())
    jsonschema.validate(raw, schema())          # raw file first: clear messages for typos
    validate_config(prepare_config(copy.deepcopy(raw)))


@pytest.mark.parametrize("name", FILES)
def test_setup_installs_this_project_and_keeps_auth_on(name):
    raw = yaml.safe_load((REPO / name).read_text())
    project = [remote for remote, local in raw["file_mounts"].items() if local == "."]
    assert len(project) == 1
    setup = " ".join(raw["setup_commands"])
    if "docker" in raw:  # the image holds the pinned stack: setup only links the synced checkout
        assert f"install --quiet --no-deps -e {project[0]}" in setup and "torch" not in setup
    else:
        assert f"install --quiet -e {project[0]}" in setup and '"torch==2.13.0"' in setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c and "RAY_AUTH_TOKEN_PATH=" in c for c in starts)
    assert "0.0.0.0" not in " ".join(raw["head_start_ray_commands"])  # dashboard not open to the internet
    token = [remote for remote, local in raw["file_mounts"].items() if local.endswith("auth_token")]
    assert len(token) == 1 and raw["setup_commands"][0] == f"chmod 600 {token[0]}"  # not world-readable


def test_ssh_is_open_to_one_address_not_to_the_internet():
    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    ranges = [r["CidrIp"] for rule in raw["provider"]["security_group"]["IpPermissions"] for r in rule["IpRanges"]]
    assert ranges and all(r.endswith("/32") and not r.startswith("0.0.0.0") for r in ranges)


def test_cloud_image_is_built_from_the_pinned_ray_image_with_the_pinned_torch():
    import ray
    import tomllib

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert raw["docker"]["image"].endswith(f"/conlst-ray:{version}-gpu")
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    base = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert base == [f"rayproject/ray:{ray.__version__}-py311-gpu"]
    assert '"torch==2.13.0"' in dockerfile and "[e5]" in dockerfile
    assert f"conlst-ray:{version}-gpu" in dockerfile       # the build command names the image cluster.yaml runs
    ports = [p["FromPort"] for p in raw["provider"]["security_group"]["IpPermissions"]]
    assert ports == [22]


def test_a_typo_in_a_cluster_file_is_caught(tmp_path):
    import jsonschema

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    raw["setup_comands"] = raw.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        jsonschema.validate(raw, schema())
