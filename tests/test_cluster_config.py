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


def _rules_ray_would_create(raw: dict, monkeypatch) -> list[dict]:
    """The inbound rules Ray's own AWS bootstrap step (``_configure_security_group``,
    after ``prepare_config``) would authorize for ``raw``: AWS itself stood in
    for by groups that record what they are given."""
    from ray.autoscaler._private.aws import config as aws
    from ray.autoscaler._private.util import prepare_config

    granted: list = []

    class Group:
        def __init__(self, name):
            self.id, self.ip_permissions = f"sg-{name}", []

        def authorize_ingress(self, IpPermissions):  # noqa: N803 -- boto3's name
            granted.extend(IpPermissions)

    monkeypatch.setattr(aws, "_get_or_create_vpc_security_groups",
                        lambda conf, node_types: {t: Group(t) for t in node_types})
    aws._configure_security_group(prepare_config(copy.deepcopy(raw)))
    return granted


def _open_to_the_world(rules: list[dict]) -> list[dict]:
    return [r for r in rules if any(ip.get("CidrIp") == "0.0.0.0/0" for ip in r.get("IpRanges", []))]


def test_ray_creates_no_rule_open_to_the_internet_for_cluster_yaml(monkeypatch):
    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert _rules_ray_would_create(raw, monkeypatch) == []  # the nodes' own group: Ray makes none
    for node_type in raw["available_node_types"].values():
        assert node_type["node_config"]["SecurityGroupIds"]
    # the check sees the rule: without named groups, Ray opens SSH to 0.0.0.0/0 whatever the file says
    for node_type in raw["available_node_types"].values():
        del node_type["node_config"]["SecurityGroupIds"]
    raw["provider"]["security_group"] = {"GroupName": "g", "IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "203.0.113.10/32"}]}]}
    assert _open_to_the_world(_rules_ray_would_create(raw, monkeypatch))


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
    assert "security_group" not in raw["provider"]  # the nodes' own group: Ray's would add SSH from anywhere


def test_a_typo_in_a_cluster_file_is_caught(tmp_path):
    import jsonschema

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    raw["setup_comands"] = raw.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        jsonschema.validate(raw, schema())
