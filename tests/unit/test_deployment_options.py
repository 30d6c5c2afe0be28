"""config_deployment_options: a deployment's options read from a Serve config file, so that
code deploying from Python takes the runners' slots from configs/ rather than repeating them."""

from __future__ import annotations

import pytest
import yaml

from deployments.config import config_deployment_options

from factories import REPO

CONFIGS = REPO / "configs"


def test_reads_the_named_deployment_of_the_first_application(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "applications": [
                    {
                        "name": "first",
                        "deployments": [
                            {"name": "Packer", "user_config": {"mode": "attention_mask"}},
                            {
                                "name": "PlanExecutor",
                                "max_ongoing_requests": 3,
                                "ray_actor_options": {"num_cpus": 0},
                            },
                        ],
                    },
                    {"name": "second", "deployments": [{"name": "Other", "num_replicas": 9}]},
                ]
            }
        )
    )
    got = config_deployment_options(path, "PlanExecutor")
    assert got == {"max_ongoing_requests": 3, "ray_actor_options": {"num_cpus": 0}}
    got["ray_actor_options"]["num_cpus"] = 5  # a copy: the next read is the file's again
    assert config_deployment_options(str(path), "PlanExecutor")["ray_actor_options"] == {
        "num_cpus": 0
    }
    assert config_deployment_options(path, "Packer") == {"user_config": {"mode": "attention_mask"}}


def test_absent_deployment_or_application_names_the_file(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "applications": [
                    {"name": "app", "deployments": [{"name": "Packer"}]},
                    {"name": "later", "deployments": [{"name": "Other"}]},
                ]
            }
        )
    )
    with pytest.raises(
        ValueError,
        match=r"serve\.yaml: application 'app' has no deployment "
        r"'Other' \(its deployments: \['Packer'\]\)",
    ):
        config_deployment_options(path, "Other")  # only the first application is read
    empty = tmp_path / "empty.yaml"
    empty.write_text("proxy_location: EveryNode\n")
    with pytest.raises(ValueError, match=r"empty\.yaml: no applications"):
        config_deployment_options(empty, "Packer")
    with pytest.raises(FileNotFoundError):
        config_deployment_options(tmp_path / "missing.yaml", "Packer")


def test_runner_slots_of_the_decorator_are_the_config_files():
    """The PlanExecutor decorator keeps ``max_ongoing_requests`` for apps deployed without a
    config file's value (configs/test.yaml sets none): it must be the shipped configs' value."""
    from deployments.runner import PlanExecutorDeployment

    squad = config_deployment_options(CONFIGS / "squad.yaml", "PlanExecutor")
    sim = config_deployment_options(CONFIGS / "sim.yaml", "PlanExecutor")
    assert (
        PlanExecutorDeployment.max_ongoing_requests
        == squad["max_ongoing_requests"]
        == sim["max_ongoing_requests"]
    )
