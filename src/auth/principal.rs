//! Who is calling: a principal, its role and, for a tenant, its quotas.
//!
//! The control plane takes a [`Principal`] with every request and decides from it
//! alone what the caller may see and change (ARCHITECTURE.md §5, "Tenants").

use std::fmt;

/// What a principal may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything: the PF and VF knobs, and every tenant's objects.
    Admin,
    /// Its own NFs and chains, and the VFs they hold; within its quotas.
    Tenant(Quota),
}

/// A tenant's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// VFs held by the tenant's NFs (a chain holds one per hop).
    pub max_vfs: Option<u32>,
    /// Chains.
    pub max_chains: Option<u32>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    name: String,
    role: Role,
}

/// The name of the principal every caller is when the service runs without
/// `--auth` (on loopback only, or with `--insecure`).
pub const ANONYMOUS: &str = "anonymous";

/// The name of the service's own principal ([`Principal::service`]).
pub const SERVICE: &str = "nfhost";

impl Principal {
    /// An admin called `name`.
    pub fn admin(name: impl Into<String>) -> Self {
        Principal {
            name: name.into(),
            role: Role::Admin,
        }
    }

    /// A tenant called `name` with `quota`.
    pub fn tenant(name: impl Into<String>, quota: Quota) -> Self {
        Principal {
            name: name.into(),
            role: Role::Tenant(quota),
        }
    }

    /// Every caller of a service without authentication: an admin.
    pub fn anonymous() -> Self {
        Principal::admin(ANONYMOUS)
    }

    /// The service itself, for what it reads and does on its own behalf (the
    /// metrics sampler, the demo's chain): an admin called [`SERVICE`].
    pub fn service() -> Self {
        Principal::admin(SERVICE)
    }

    /// The principal's name, as the principals file (or the client
    /// certificate's CN) gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its role.
    pub fn role(&self) -> &Role {
        &self.role
    }

    /// Whether it is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The tenant whose objects it may touch, `None` for an admin (every tenant's).
    pub fn tenant_name(&self) -> Option<&str> {
        match self.role {
            Role::Admin => None,
            Role::Tenant(_) => Some(&self.name),
        }
    }

    /// Its quotas; an admin has none.
    pub fn quota(&self) -> Quota {
        match self.role {
            Role::Admin => Quota::default(),
            Role::Tenant(q) => q,
        }
    }

    /// Whether it may see and change an object recorded as `tenant`'s (empty: an
    /// admin's object, which no tenant may touch).
    pub fn owns(&self, tenant: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Tenant(_) => !tenant.is_empty() && tenant == self.name,
        }
    }

    /// The tenant an object it creates is recorded as: its own name for a tenant,
    /// empty (the operator's) for an admin.
    pub fn tenant_of_new(&self) -> String {
        self.tenant_name().unwrap_or_default().to_owned()
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role {
            Role::Admin => write!(f, "admin {}", self.name),
            Role::Tenant(_) => write!(f, "tenant {}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_owns_only_its_own_objects_and_an_admin_every_one() {
        let blue = Principal::tenant("blue", Quota::default());
        assert!(blue.owns("blue"));
        assert!(!blue.owns("red"));
        assert!(!blue.owns(""), "an admin's object is no tenant's");
        let ops = Principal::admin("ops");
        assert!(ops.owns("blue") && ops.owns(""));
        assert_eq!(blue.tenant_of_new(), "blue");
        assert_eq!(ops.tenant_of_new(), "");
        assert_eq!(blue.to_string(), "tenant blue");
    }
}
