"""The upstream CRDs (../shared/crds) install, and the server validates custom resources against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferbox.testenv import InstalledManifests
from inferbox.testenv.crds import load_manifests
from inferbox.testenv.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.crds, pytest.mark.embedded]

ISVC = {"group": "serving.kserve.io", "version": "v1beta1", "plural": "inferenceservices"}
VAP = "safe-upgrades.gateway.networking.k8s.io"


def isvc(name: str, predictor: dict[str, Any] | None) -> dict[str, Any]:
    spec = {} if predictor is None else {"predictor": predictor}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name}, "spec": spec}


VALID_PREDICTOR = {"minReplicas": 1, "model": {"modelFormat": {"name": "sklearn"},
                                               "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}


def test_all_crds_established(crds_installed: InstalledManifests, api: client.ApiClient,
                              upstream_crds_dir: Path) -> None:
    # Every CRD document of the folder, however many it holds (../shared/crds grows with the platform).
    docs = load_manifests([upstream_crds_dir])
    in_folder = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert in_folder and len(crds_installed.crds) == len(in_folder)
    established = {
        crd.metadata.name
        for crd in client.ApiextensionsV1Api(api).list_custom_resource_definition().items
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
    }
    assert set(crds_installed.crds) <= established
    # Other documents beside the CRDs (gateway-api's ValidatingAdmissionPolicy) were applied as what they are.
    others = {f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["kind"] != "CustomResourceDefinition"}
    assert others <= set(crds_installed.others)


def test_valid_inference_service_is_accepted(crds_installed: InstalledManifests, api: client.ApiClient,
                                             namespace: str) -> None:
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        **ISVC, namespace=namespace, body=isvc("iris", VALID_PREDICTOR))
    assert created["metadata"]["uid"]


@pytest.mark.parametrize(("predictor", "expected"), [
    (None, "spec.predictor: Required value"),
    ({**VALID_PREDICTOR, "minReplicas": "two"}, "spec.predictor.minReplicas: Invalid value"),
], ids=["missing-predictor", "string-replicas"])
def test_invalid_inference_service_is_rejected(crds_installed: InstalledManifests, api: client.ApiClient,
                                               namespace: str, predictor: dict[str, Any] | None,
                                               expected: str) -> None:
    with pytest.raises(ApiException) as err:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            **ISVC, namespace=namespace, body=isvc("broken", predictor))
    assert err.value.status == 422
    assert expected in err.value.body


def test_gateway_api_admission_policy_is_enforced(crds_installed: InstalledManifests, api: client.ApiClient) -> None:
    """The ValidatingAdmissionPolicy shipped beside the gateway-api CRDs rejects a downgrade (dry run)."""
    if f"ValidatingAdmissionPolicy/{VAP}" not in crds_installed.others:
        pytest.skip("the upstream CRD folder has no gateway-api bundle (../shared/crds has it; chart bundles do not)")
    ext = client.ApiextensionsV1Api(api)
    patch = {"metadata": {"annotations": {"gateway.networking.k8s.io/bundle-version": "v1.4.0"}}}

    def rejected() -> str | None:
        try:
            ext.patch_custom_resource_definition("gateways.gateway.networking.k8s.io", patch, dry_run="All")
        except ApiException as exc:
            return exc.body if VAP in exc.body else None
        return None  # the policy may take a moment to be loaded by the apiserver

    body = wait_for(rejected, timeout=30, what=f"{VAP} to reject an older gateway-api bundle")
    assert "prohibited by default" in body
