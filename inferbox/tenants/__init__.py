"""Tenants: ``tenants/<name>.yaml`` declares one; ``invoke tenants-apply`` makes the cluster match.

spec (the typed file format) -> render (objects from manifests/tenant/) -> apply (plan, server-side
apply, prune); keys (the ES256 token issuer and its JWKS); isolation (verify-isolation's tokens
and probes); app (what the tasks call).
"""

from inferbox.tenants.render import render_shared, render_tenant
from inferbox.tenants.spec import Tenant, TenantConfigError, load_tenants

__all__ = ["Tenant", "TenantConfigError", "load_tenants", "render_shared", "render_tenant"]
