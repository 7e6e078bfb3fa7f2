"""cluster.yaml against Ray's own launcher schema, offline, and its security properties."""

import os

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def raw():
    with open(os.path.join(REPO, "cluster.yaml")) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_passes_rays_schema(raw):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(raw))  # raises on any unknown key, wrong type or bad node type


def test_schema_check_catches_a_typo(raw):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(dict(raw, setup_command=["echo"])))


def rays_inbound_rules():
    """Ray's AWS rule builder, taken from its source: the module itself imports boto3, which
    a CPU laptop does not need. The three functions are pure."""
    import ast
    import importlib.util
    import itertools

    origin = importlib.util.find_spec("ray.autoscaler._private.aws").submodule_search_locations[0]
    tree = ast.parse(open(os.path.join(origin, "config.py")).read())
    wanted = {"_create_default_inbound_rules", "_create_default_intracluster_inbound_rules",
              "_create_default_ssh_inbound_rules"}
    module = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted], [])
    namespace = {"itertools": itertools}
    exec(compile(module, "ray_aws_rules", "exec"), namespace)
    assert wanted <= set(namespace)
    return namespace["_create_default_inbound_rules"]


def test_only_ssh_is_open_to_the_internet(raw):
    _create_default_inbound_rules = rays_inbound_rules()
    extra = raw["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in _create_default_inbound_rules({"sg-cluster"}, extra):  # what `ray up` would authorise
        public = [r for r in rule.get("IpRanges", []) if r.get("CidrIp") == "0.0.0.0/0"]
        public += [r for r in rule.get("Ipv6Ranges", []) if r.get("CidrIpv6") == "::/0"]
        if public:
            assert (rule["FromPort"], rule["ToPort"]) == (22, 22), rule


def test_token_auth_on_every_node_from_a_mounted_file(raw):
    assert any(os.path.basename(dst) == "ray_auth_token" for dst in raw["file_mounts"])
    env_setup = " ".join(raw["setup_commands"])
    assert "RAY_AUTH_MODE=token" in env_setup and "RAY_AUTH_TOKEN_PATH=" in env_setup
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert all(". ~/.arplatform_env" in c for c in raw[key]), key
    text = open(os.path.join(REPO, "cluster.yaml")).read()
    assert "RAY_AUTH_TOKEN=" not in text  # the token itself never appears in the file


def test_dashboard_is_not_exposed(raw):
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert raw["available_node_types"]["gpu_worker"]["resources"]["GPU"] == 1


def test_workers_run_the_heads_ray_version(raw):
    """Ray refuses (or misbehaves with) nodes of another version: the workers install the Ray
    the head pins, read from constraints-cpu.txt (one source), while torch stays a CUDA build."""
    with open(os.path.join(REPO, "constraints-cpu.txt")) as f:
        assert any(line.startswith("ray==") for line in f), "constraints-cpu.txt pins no Ray version"
    head = " ".join(raw["head_setup_commands"])
    workers = " ".join(raw["worker_setup_commands"])
    assert "-c ~/arplatform/constraints-cpu.txt" in head
    assert "grep '^ray==' ~/arplatform/constraints-cpu.txt" in workers and "-c " not in workers, workers
