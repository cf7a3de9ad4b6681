"""tenants-apply against a real API server with the upstream CRDs: create, idempotence, changes,
pruning, quota and Pod Security admission, the model admission policy, RBAC, tenant-delete."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferbox.config import Settings
from inferbox.errors import InferboxError, Invalid, KubeError
from inferbox.k8s import Kube, ObjectRef
from inferbox.tenants import app
from inferbox.tenants.apply import Outcome
from inferbox.tenants.render import TENANT_LABEL
from inferbox.testenv import ControlPlane
from inferbox.testenv.waiting import wait_for
from inferbox.wait import Deadline, Waiter
from tests.cluster.conftest import Tenants

pytestmark = [pytest.mark.cluster, pytest.mark.crds]

ISVC = {"group": "serving.kserve.io", "version": "v1beta1", "plural": "inferenceservices"}
SECURITY = {"group": "security.istio.io", "version": "v1"}


@pytest.fixture(scope="module")
def kube(control_plane: ControlPlane, crds_installed: object) -> Kube:
    return Kube.connect(kubeconfig=control_plane.kubeconfig)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    app.keystore(settings).ensure()
    return settings


def outcomes(report: Any, tenant: str | None = None) -> dict[str, Outcome]:
    return {f"{r.ref.kind}/{r.ref.name}": r.outcome for r in report.results if tenant is None or r.tenant == tenant}


def changed(report: Any) -> dict[str, Outcome]:
    return {f"{r.ref.kind}/{r.ref.name}": r.outcome for r in report.changed}


def test_apply_creates_everything_and_a_second_run_changes_nothing(tenants: Tenants, kube: Kube,
                                                                    api: client.ApiClient) -> None:
    a = tenants.add("tenant-a")
    b = tenants.add("tenant-b")
    planned = tenants.apply(dry_run=True)
    assert set(outcomes(planned, a).values()) == {Outcome.WOULD_CREATE}
    assert kube.get(ObjectRef("v1", "Namespace", a)) is None  # a dry run changes nothing
    first = tenants.apply()
    assert not first.errors
    created = outcomes(first, a)
    assert set(created.values()) == {Outcome.CREATED}
    assert {"Namespace/" + a, "ResourceQuota/tenant-quota", "LimitRange/tenant-defaults",
            "NetworkPolicy/default-deny", "PeerAuthentication/default", "RequestAuthentication/inferbox-jwt",
            "AuthorizationPolicy/allow-callers", "EnvoyFilter/inferbox-rate-limit", "ServiceAccount/tenant-operator",
            "Role/tenant-operator", "RoleBinding/tenant-operator", "ConfigMap/inferbox-tenant"} <= set(created)
    assert "EnvoyFilter/inferbox-rate-limit" not in outcomes(first, b)  # tenant-b sets no rate limit

    # The Istio objects went through their CRDs' server-side validation and read back as rendered.
    policy = client.CustomObjectsApi(api).get_namespaced_custom_object(
        **SECURITY, namespace=a, plural="authorizationpolicies", name="allow-callers")
    assert policy["spec"]["rules"][0]["when"] == [{"key": "request.auth.claims[tenant]", "values": [a]}]
    jwt_rule = client.CustomObjectsApi(api).get_namespaced_custom_object(
        **SECURITY, namespace=a, plural="requestauthentications", name="inferbox-jwt")["spec"]["jwtRules"][0]
    assert jwt_rule["jwks"] == app.keystore(tenants.settings).jwks_json()

    second = tenants.apply()
    assert second.changed == [] and not second.errors
    assert second.summary() == f"nothing changed: all {len(second.results)} objects unchanged"
    assert len(second.results) == len(first.results)

    dry = tenants.apply(dry_run=True)  # the server's dry-run apply agrees
    assert dry.changed == []


def test_crd_schema_is_enforced_server_side(tenants: Tenants, kube: Kube) -> None:
    a = tenants.add("tenant-a")
    tenants.apply(tenant=a)
    broken = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "broken", "namespace": a}, "spec": {"action": "PERMIT"}}
    with pytest.raises(Invalid, match=r"spec\.action"):
        kube.apply(broken, field_manager="test")


def test_changes_touch_exactly_the_right_objects(tenants: Tenants, kube: Kube) -> None:
    a = tenants.add("tenant-a")
    b = tenants.add("tenant-b")
    tenants.apply()

    tenants.edit(a, lambda d: d["callers"].update(subjects=["iris-web"]))  # iris-ci may no longer call
    planned = tenants.apply(dry_run=True)
    assert changed(planned) == {"AuthorizationPolicy/allow-callers": Outcome.WOULD_CONFIGURE}
    report = tenants.apply()
    assert changed(report) == {"AuthorizationPolicy/allow-callers": Outcome.CONFIGURED}
    live = kube.get(ObjectRef("security.istio.io/v1", "AuthorizationPolicy", "allow-callers", a))
    assert live is not None
    assert live["spec"]["rules"][0]["from"][0]["source"]["requestPrincipals"] == [
        f"https://issuer.inferbox.local/tenants/{a}/iris-web"]

    tenants.edit(a, lambda d: d.update(models=[], tokenBudgets=[]))  # budgets need an OpenAI model
    assert changed(tenants.apply()) == {"ConfigMap/inferbox-tenant": Outcome.CONFIGURED}

    tenants.edit(a, lambda d: d.pop("rateLimit"))
    assert changed(tenants.apply(dry_run=True)) == {"EnvoyFilter/inferbox-rate-limit": Outcome.WOULD_PRUNE}
    report = tenants.apply()
    assert changed(report) == {"EnvoyFilter/inferbox-rate-limit": Outcome.PRUNED}
    assert kube.get(ObjectRef("networking.istio.io/v1alpha3", "EnvoyFilter", "inferbox-rate-limit", a)) is None
    assert set(outcomes(report, b).values()) == {Outcome.UNCHANGED}  # the other tenant is untouched

    assert tenants.apply().changed == []


def _pod(name: str, requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
         init: client.V1Container | None = None) -> client.V1Pod:
    resources = client.V1ResourceRequirements(requests=requests, limits=limits) if requests or limits else None
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
        containers=[client.V1Container(name="server", image="example.invalid/model:1", resources=resources)],
        init_containers=[init] if init else None))


def _quota_ready(kube: Kube, core: client.CoreV1Api, namespace: str) -> None:
    """Wait until the quota controller has computed usage for every resource of tenant-quota.

    Admission refuses what a quota covers until then ("status unknown for quota"). A quota created
    within ~30 s of the KServe CRDs (the controller's discovery resync) is computed without
    InferenceServices, and recomputed only when spec.hard changes or after 5 minutes; so while the
    count is missing, spec.hard is touched (an extra entry added and removed again) to ask again.
    """
    ref = ObjectRef("v1", "ResourceQuota", "tenant-quota", namespace)
    Waiter(kube).until(ref, lambda q: bool((q.get("status") or {}).get("used")), Deadline(60),
                       what="the quota controller to compute tenant-quota's usage")

    def computed() -> bool:
        quota = core.read_namespaced_resource_quota("tenant-quota", namespace)
        if set(quota.spec.hard) <= set(quota.status.used or {}):
            return True
        for value in ("1000", None):
            core.patch_namespaced_resource_quota("tenant-quota", namespace,
                                                 {"spec": {"hard": {"count/configmaps": value}}})
        return False

    wait_for(computed, timeout=90, what=f"usage of every resource in {namespace}/tenant-quota",
             describe=lambda: str(core.read_namespaced_resource_quota("tenant-quota", namespace).status))


def test_quota_limit_range_and_pod_security_admission(tenants: Tenants, kube: Kube, core: client.CoreV1Api) -> None:
    a = tenants.add("tenant-a")
    tenants.apply(tenant=a)
    _quota_ready(kube, core, a)

    admitted = core.create_namespaced_pod(a, _pod("defaults"))
    # No resources named: the LimitRange filled in the tenant's defaults, so the quota can count them.
    assert admitted.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "256Mi"}
    assert admitted.spec.containers[0].resources.limits == {"cpu": "500m", "memory": "512Mi"}

    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(a, _pod("too-big", {"cpu": "5"}, {"cpu": "5"}))
    assert err.value.status == 403 and "exceeded quota: tenant-quota" in err.value.body
    with pytest.raises(ApiException) as err:  # tenant-a has no GPU quota: none at all
        core.create_namespaced_pod(a, _pod("gpu", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"}))
    assert err.value.status == 403 and "requests.nvidia.com/gpu" in err.value.body

    # baseline is enforced: Istio's classic istio-init (NET_ADMIN, NET_RAW) is refused, which is
    # why meshed tenant pods need the Istio CNI node agent (see manifests/tenant/namespace.yaml.j2).
    istio_init = client.V1Container(name="istio-init", image="example.invalid/proxyv2:1",
                                    security_context=client.V1SecurityContext(
                                        capabilities=client.V1Capabilities(add=["NET_ADMIN", "NET_RAW"])))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod(a, _pod("meshed", init=istio_init))
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 403 and 'violates PodSecurity "baseline:' in message
    assert "NET_ADMIN" in message


def _allowed(api: client.ApiClient, user: str, groups: list[str], verb: str, resource: str,
             namespace: str | None = None, group: str = "", subresource: str | None = None) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user, groups=groups, resource_attributes=client.V1ResourceAttributes(
            namespace=namespace, verb=verb, resource=resource, group=group, subresource=subresource)))
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


def test_operator_service_account_is_confined_to_its_namespace(tenants: Tenants, control_plane: ControlPlane,
                                                               api: client.ApiClient, kube: Kube,
                                                               core: client.CoreV1Api) -> None:
    a = tenants.add("tenant-a")
    c = tenants.add("tenant-c")
    tenants.apply()
    _quota_ready(kube, core, a)
    user = f"system:serviceaccount:{a}:tenant-operator"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{a}", "system:authenticated"]

    def can(verb: str, resource: str, namespace: str | None, **kw: Any) -> bool:
        return _allowed(api, user, groups, verb, resource, namespace, **kw)

    assert can("create", "inferenceservices", a, group="serving.kserve.io")
    assert can("delete", "inferenceservices", a, group="serving.kserve.io")
    assert can("get", "pods", a, subresource="log")
    assert can("list", "events", a)
    # Not their quota, policies or secrets; nothing in another tenant's namespace; nothing cluster-wide.
    assert not can("delete", "resourcequotas", a)
    assert not can("update", "authorizationpolicies", a, group="security.istio.io")
    assert not can("get", "secrets", a)
    assert not can("list", "pods", c)
    assert not can("get", "inferenceservices", c, group="serving.kserve.io")
    assert not can("list", "namespaces", None)
    assert not can("list", "nodes", None)

    # The same through real requests made as the ServiceAccount: the admin impersonates it, as
    # kubectl --as does (the apiserver adds the ServiceAccount's groups itself).
    as_operator = control_plane.api_client()
    as_operator.set_default_header("Impersonate-User", user)
    try:
        objects = client.CustomObjectsApi(as_operator)
        isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {"name": "sklearn-iris"},
                "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"},
                                                 "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model"}}}}

        last_error: list[str] = []

        def created() -> bool:
            # The admission policy is loaded by the apiserver shortly after it is created.
            try:
                objects.create_namespaced_custom_object(**ISVC, namespace=a, body=isvc)
            except ApiException as exc:
                if exc.status == 403 and "not among the models" in exc.body:
                    raise AssertionError(f"an allowed model was refused: {exc.body}") from exc
                last_error[:] = [f"{exc.status}: {exc.body}"]
                return False
            return True

        wait_for(created, timeout=30, what=f"operator of {a} creating its allowed model",
                 describe=lambda: last_error[0] if last_error else "no answer")
        # A model the tenant file does not list is refused by the admission policy.
        other = {**isvc, "metadata": {"name": "not-listed"}}

        def refused() -> str | None:
            try:
                objects.create_namespaced_custom_object(**ISVC, namespace=a, body=other, dry_run="All")
            except ApiException as exc:
                return exc.body if "not among the models" in exc.body else None
            return None

        body = wait_for(refused, timeout=30, what="inferbox-tenant-models to refuse an unlisted model")
        assert "InferenceService not-listed is not among the models tenant" in body
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(as_operator).list_namespaced_pod(c)
        assert err.value.status == 403
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(as_operator).list_namespace()
        assert err.value.status == 403
    finally:
        as_operator.close()


def test_tenant_delete_removes_only_what_inferbox_owns(tenants: Tenants, kube: Kube,
                                                       core: client.CoreV1Api) -> None:
    a = tenants.add("tenant-a")
    b = tenants.add("tenant-b")
    tenants.apply()
    before_b = tenants.apply(tenant=b).results
    core.create_namespaced_config_map(a, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="users-own"),
                                                            data={"k": "v"}))
    with pytest.raises(InferboxError, match="without confirmation"):
        tenants.delete(a, confirmed=False)

    report = tenants.delete(a)
    result = outcomes(report)
    assert result.pop(f"Namespace/{a}") is Outcome.KEPT
    assert set(result.values()) == {Outcome.PRUNED} and "ConfigMap/inferbox-tenant" in result
    kept = next(r for r in report.results if r.ref.kind == "Namespace")
    assert "configmap/users-own" in kept.detail
    assert core.read_namespaced_config_map("users-own", a).data == {"k": "v"}  # not ours: untouched
    assert kube.list("v1", "ResourceQuota", a) == []
    assert [o for o in kube.list("networking.k8s.io/v1", "NetworkPolicy", a)] == []
    # The other tenant is exactly as it was.
    assert len(tenants.apply(tenant=b).results) == len(before_b)
    assert tenants.apply(tenant=b).changed == []

    # With the file gone, tenants-apply names the leftover namespace instead of deleting it.
    (tenants.folder / f"{a}.yaml").unlink()
    tenants.docs.pop(a)
    assert a in tenants.apply().orphans
    core.delete_namespaced_config_map("users-own", a)
    final = tenants.delete(a)
    assert outcomes(final) == {f"Namespace/{a}": Outcome.PRUNED}

    def gone_or_terminating() -> bool:
        try:
            return core.read_namespace(a).status.phase == "Terminating"
        except ApiException as exc:
            return exc.status == 404

    assert gone_or_terminating()
    assert kube.list("v1", "Namespace", label_selector=f"{TENANT_LABEL}={b}")


# -- all-or-nothing (issue 12, item 3) ----------------------------------------------------------------

@pytest.fixture
def refuse_quotas(api: client.ApiClient) -> Iterator[Callable[[str], None]]:
    """A ValidatingAdmissionPolicy that refuses the ResourceQuota of the tenants named (by their
    label): the API server rejecting one object of a tenant that passed every local check."""
    admission = client.AdmissionregistrationV1Api(api)
    made: list[str] = []

    def refuse(tenant: str) -> None:
        name = f"refuse-quota-{tenant}"
        policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                  "metadata": {"name": name}, "spec": {
                      "failurePolicy": "Fail",
                      "matchConstraints": {
                          "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                             "operations": ["CREATE", "UPDATE"], "resources": ["resourcequotas"]}],
                          "objectSelector": {"matchLabels": {TENANT_LABEL: tenant}}},
                      "validations": [{"expression": "false", "message": "this cluster refuses the quota"}]}}
        binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                   "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}}
        admission.create_validating_admission_policy(policy)
        admission.create_validating_admission_policy_binding(binding)
        made.append(name)
        # The policy is enforced once the API server's informer has it: wait on a probe quota.
        probe = {"apiVersion": "v1", "kind": "ResourceQuota",
                 "metadata": {"name": "probe", "namespace": "default", "labels": {TENANT_LABEL: tenant}},
                 "spec": {"hard": {"pods": "1"}}}

        def refused() -> bool:
            try:
                client.CoreV1Api(api).create_namespaced_resource_quota("default", probe, dry_run="All")
            except ApiException as exc:
                return "refuses the quota" in str(exc.body)
            return False

        wait_for(refused, timeout=30, what=f"policy {name} to be enforced")

    yield refuse
    for name in made:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)


ISOLATION = {"NetworkPolicy", "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy"}


def test_a_refused_new_tenant_is_never_left_half_built(tenants: Tenants, kube: Kube, core: client.CoreV1Api,
                                                       refuse_quotas: Callable[[str], None]) -> None:
    a = tenants.add("tenant-a")
    b = tenants.add("tenant-b")
    refuse_quotas(a)

    # The dry run validates every object server-side, those of a namespace not made yet too.
    with pytest.raises(app.TenantsFailed) as dry:
        tenants.apply(dry_run=True)
    assert "this cluster refuses the quota" in str(dry.value) and a in str(dry.value)
    assert kube.get(ObjectRef("v1", "Namespace", a)) is None

    with pytest.raises(app.TenantsFailed) as err:
        tenants.apply()
    message = str(err.value)
    assert f"tenants/{a}.yaml" in message and "quotas" in message and "this cluster refuses the quota" in message
    report = err.value.report
    assert set(report.errors) == {a}  # tenant-b is applied whole
    assert set(outcomes(report, b).values()) == {Outcome.CREATED}
    mine = outcomes(report, a)
    # Isolation came first, then the quota was refused: what was made is deleted again.
    assert {k for k, v in mine.items() if v is Outcome.ROLLED_BACK} >= {f"Namespace/{a}", "NetworkPolicy/default-deny",
                                                                          "AuthorizationPolicy/allow-callers"}
    assert mine["ResourceQuota/tenant-quota"] is Outcome.NOT_APPLIED
    assert Outcome.CREATED not in mine.values()

    def gone() -> bool:
        try:
            namespace = core.read_namespace(a)
        except ApiException as exc:
            return exc.status == 404
        assert namespace.status.phase == "Terminating"  # nothing new can be made in it meanwhile
        return False

    wait_for(gone, timeout=60, what=f"namespace {a} to be deleted by the rollback")


def test_a_refused_change_reports_what_differs_and_how_to_finish(tenants: Tenants, kube: Kube,
                                                                 refuse_quotas: Callable[[str], None]) -> None:
    a = tenants.add("tenant-a")
    tenants.apply()
    refuse_quotas(a)
    tenants.edit(a, lambda d: (d["callers"].update(subjects=["iris-web"]), d["quotas"].update(pods=19)))
    with pytest.raises(app.TenantsFailed) as err:
        tenants.apply()
    report = err.value.report
    mine = outcomes(report, a)
    assert mine["AuthorizationPolicy/allow-callers"] is Outcome.CONFIGURED
    assert mine["ResourceQuota/tenant-quota"] is Outcome.NOT_APPLIED
    message = report.errors[a]
    assert "authorizationpolicy" in message and "already hold the new spec" in message
    assert f"tenants-apply --tenant {a}" in message
    # The namespace keeps every isolation object; the old quota is still in effect.
    for kind, name in (("NetworkPolicy", "default-deny"), ("PeerAuthentication", "default"),
                       ("RequestAuthentication", "inferbox-jwt"), ("AuthorizationPolicy", "allow-callers")):
        version = "networking.k8s.io/v1" if kind == "NetworkPolicy" else "security.istio.io/v1"
        assert kube.get(ObjectRef(version, kind, name, a)) is not None
    quota = kube.get(ObjectRef("v1", "ResourceQuota", "tenant-quota", a))
    assert quota is not None and quota["spec"]["hard"]["pods"] == "20"


def test_a_rollback_never_deletes_a_namespace_it_did_not_create(tenants: Tenants, kube: Kube, core: client.CoreV1Api,
                                                                refuse_quotas: Callable[[str], None]) -> None:
    a = tenants.add("tenant-a")
    # Someone made the namespace by hand, with their own data in it, before the first apply.
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=a)))
    core.create_namespaced_config_map(a, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="theirs"),
                                                            data={"keep": "me"}))
    refuse_quotas(a)
    with pytest.raises(app.TenantsFailed) as err:
        tenants.apply()
    mine = outcomes(err.value.report, a)
    assert mine[f"Namespace/{a}"] is Outcome.CONFIGURED  # adopted, not created: not the rollback's to delete
    assert mine["NetworkPolicy/default-deny"] is Outcome.ROLLED_BACK
    namespace = core.read_namespace(a)
    assert namespace.status.phase == "Active"
    assert core.read_namespaced_config_map("theirs", a).data == {"keep": "me"}
    assert kube.get(ObjectRef("networking.k8s.io/v1", "NetworkPolicy", "default-deny", a)) is None


def test_a_namespace_with_copied_labels_is_not_the_tenants(tenants: Tenants, core: client.CoreV1Api) -> None:
    a = tenants.add("tenant-a")
    tenants.apply()
    stray = f"staging-{tenants.suffix}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=stray, labels={"app.kubernetes.io/managed-by": "inferbox", TENANT_LABEL: a})))
    try:
        report = tenants.apply()
        assert report.changed == []
        tenants.apply(tenant=a)
        assert core.read_namespace(stray).status.phase == "Active"
    finally:
        core.delete_namespace(stray)


def test_fields_added_by_hand_to_isolation_are_removed(tenants: Tenants, kube: Kube, api: client.ApiClient) -> None:
    a = tenants.add("tenant-a")
    tenants.apply()
    custom = client.CustomObjectsApi(api)
    # A selector on the ALLOW policy: it then selects nothing, and Istio admits every request.
    custom.patch_namespaced_custom_object(**SECURITY, namespace=a, plural="authorizationpolicies", name="allow-callers",
                                          body={"spec": {"selector": {"matchLabels": {"no": "pod"}}}})
    custom.patch_namespaced_custom_object(**SECURITY, namespace=a, plural="peerauthentications", name="default",
                                          body={"spec": {"selector": {"matchLabels": {"app": "x"}},
                                                         "portLevelMtls": {"8080": {"mode": "DISABLE"}}}})
    report = tenants.apply()
    assert changed(report) == {"AuthorizationPolicy/allow-callers": Outcome.CONFIGURED,
                               "PeerAuthentication/default": Outcome.CONFIGURED}
    policy = kube.get(ObjectRef("security.istio.io/v1", "AuthorizationPolicy", "allow-callers", a))
    peer = kube.get(ObjectRef("security.istio.io/v1", "PeerAuthentication", "default", a))
    assert policy is not None and "selector" not in policy["spec"]
    assert peer is not None and peer["spec"] == {"mtls": {"mode": "STRICT"}}
    assert tenants.apply().changed == []


def test_a_refused_prune_is_reported_not_a_crash(tenants: Tenants, kube: Kube, api: client.ApiClient) -> None:
    a = tenants.add("tenant-a")
    tenants.apply()
    tenants.edit(a, lambda d: d.pop("rateLimit"))  # its EnvoyFilter is to be pruned
    admission = client.AdmissionregistrationV1Api(api)
    name = f"keep-filter-{tenants.suffix}"
    admission.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name}, "spec": {"failurePolicy": "Fail", "matchConstraints": {
            "resourceRules": [{"apiGroups": ["networking.istio.io"], "apiVersions": ["*"], "operations": ["DELETE"],
                               "resources": ["envoyfilters"]}], "namespaceSelector": {"matchLabels": {
                                   "kubernetes.io/metadata.name": a}}},
            "validations": [{"expression": "false", "message": "filters stay"}]}})
    admission.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name}, "spec": {"policyName": name, "validationActions": ["Deny"]}})
    filter_ref = ObjectRef("networking.istio.io/v1alpha3", "EnvoyFilter", "inferbox-rate-limit", a)

    def enforced() -> bool:
        try:
            kube.delete(filter_ref, dry_run=True)
        except Invalid:
            return True
        except KubeError as exc:
            return "filters stay" in str(exc)
        return False

    try:
        wait_for(enforced, timeout=30, what=f"policy {name} to be enforced")
        with pytest.raises(app.TenantsFailed) as dry:
            tenants.apply(dry_run=True)
        assert "filters stay" in str(dry.value)  # the dry run asked the server
        with pytest.raises(app.TenantsFailed) as err:
            tenants.apply()
        report = err.value.report
        assert outcomes(report, a)["EnvoyFilter/inferbox-rate-limit"] is Outcome.NOT_APPLIED
        assert "filters stay" in report.errors[a]
        assert kube.get(filter_ref) is not None
    finally:
        admission.delete_validating_admission_policy_binding(name)
        admission.delete_validating_admission_policy(name)
