"""Admission, authorization and namespace lifecycle behave as in a real cluster."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferbox.testenv import ControlPlane
from inferbox.testenv.waiting import wait_for

pytestmark = pytest.mark.cluster


def pod(name: str, cpu: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(
            name="c", image="example.invalid/app:1",
            resources=client.V1ResourceRequirements(requests={"cpu": cpu}, limits={"cpu": cpu}))]),
    )


def test_resource_quota_rejects_over_quota_pod(core: client.CoreV1Api, namespace: str) -> None:
    quota = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="small"),
                                   spec=client.V1ResourceQuotaSpec(hard={"requests.cpu": "1", "pods": "5"}))
    core.create_namespaced_resource_quota(namespace, quota)
    # Admission refuses everything until the quota controller has computed usage.
    wait_for(lambda: (core.read_namespaced_resource_quota("small", namespace).status.hard or {}).get("requests.cpu"),
             timeout=30, what="ResourceQuota status from the quota controller")

    core.create_namespaced_pod(namespace, pod("fits", "500m"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(namespace, pod("too-big", "2"))
    assert err.value.status == 403
    assert "exceeded quota" in err.value.body


def _sar(api: client.ApiClient, user: str, groups: list[str], namespace: str) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=groups,
        resource_attributes=client.V1ResourceAttributes(namespace=namespace, verb="list", resource="pods")))
    return client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed


def test_rbac_confines_service_account_to_its_namespace(control_plane: ControlPlane, api: client.ApiClient,
                                                        core: client.CoreV1Api,
                                                        make_namespace: Callable[[str], str]) -> None:
    team_a, team_b = make_namespace("team-a"), make_namespace("team-b")
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(team_a, client.V1ServiceAccount(
        metadata=client.V1ObjectMeta(name="reader")))
    rbac.create_namespaced_role(team_a, client.V1Role(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding(team_a, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=team_a)]))

    user = f"system:serviceaccount:{team_a}:reader"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{team_a}", "system:authenticated"]
    assert _sar(api, user, groups, team_a) is True
    assert _sar(api, user, groups, team_b) is False

    # The same through authentication: a token signed by the apiserver's
    # service-account key (TokenRequest), used as a bearer token.
    token = core.create_namespaced_service_account_token("reader", team_a, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    as_reader = _client_with_token(control_plane, token)
    try:
        reader_core = client.CoreV1Api(as_reader)
        reader_core.list_namespaced_pod(team_a)
        with pytest.raises(ApiException) as err:
            reader_core.list_namespaced_pod(team_b)
        assert err.value.status == 403
        assert user in err.value.body
    finally:
        as_reader.close()


def _client_with_token(control_plane: ControlPlane, token: str) -> client.ApiClient:
    admin = control_plane.api_client()
    cfg = client.Configuration()
    cfg.host = admin.configuration.host
    cfg.ssl_ca_cert = admin.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    admin.close()
    return client.ApiClient(cfg)


def test_token_controller_fills_service_account_secret(core: client.CoreV1Api, namespace: str) -> None:
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name="default-token",
                                     annotations={"kubernetes.io/service-account.name": "default"}),
        type="kubernetes.io/service-account-token")
    core.create_namespaced_secret(namespace, secret)
    filled = wait_for(lambda: (core.read_namespaced_secret("default-token", namespace).data or {}).get("token"),
                      timeout=30, what="the token controller to fill the service-account token Secret")
    assert base64.b64decode(filled).count(b".") == 2  # a signed JWT


def test_namespace_deletion_finalizes(core: client.CoreV1Api, make_namespace: Callable[[str], str]) -> None:
    name = make_namespace("doomed")
    core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm")))
    core.create_namespaced_pod(name, pod("p", "10m"))
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout=60, what=f"namespace {name} to be finalized and removed",
             describe=lambda: str(core.read_namespace(name).status))
