//! The node registry's tables on both backends: networks and their trust
//! settings, single-use expiring enrollment tokens, enrolled keys and
//! revocation.

mod common;

use anyhow::Result;
use common::each_backend;
use meshtable_store::registry::{NewEnrollToken, NewNodeKey, RegistryError};

const T0: i64 = 1_800_000_000_000;

fn node<'a>(id: &'a str, key: &'a str) -> NewNodeKey<'a> {
    NewNodeKey {
        node: id,
        public_key: key,
        mqtt_password_hash: "$7$101$c2FsdA==$aGFzaA==",
        hostname: Some("roof"),
    }
}

#[tokio::test]
async fn networks_tokens_enrollment_and_revocation() -> Result<()> {
    each_backend("registry", |store| async move {
        store.add_network("net", false, "salt-1", T0).await?;
        assert!(matches!(
            store.add_network("net", true, "salt-2", T0).await,
            Err(RegistryError::NetworkExists(_))
        ));
        store.set_accept_unsigned("net", true).await?;
        let nets = store.network_trust().await?;
        assert_eq!(nets.len(), 1);
        assert!(nets[0].accept_unsigned);
        assert!(!format!("{:?}", nets[0]).contains("salt-1"));
        assert!(matches!(
            store.set_accept_unsigned("nope", true).await,
            Err(RegistryError::UnknownNetwork(_))
        ));

        let token = |hash: &'static str, network: &'static str, expires_ms| NewEnrollToken {
            token_hash: hash,
            network,
            site: Some("school"),
            created_ms: T0,
            expires_ms,
        };
        assert!(matches!(
            store
                .create_enroll_token(&token("h0", "nope", T0 + 10))
                .await,
            Err(RegistryError::UnknownNetwork(_))
        ));
        store
            .create_enroll_token(&token("h1", "net", T0 + 1_000))
            .await?;
        store
            .create_enroll_token(&token("h2", "net", T0 + 1_000))
            .await?;

        // Each outcome, as data: (token hash, node, key, time, expected).
        let cases: [(&str, &str, &str, i64, &str); 5] = [
            ("h1", "n1", "k1", T0 + 1, "ok"),
            ("h1", "n2", "k2", T0 + 2, "used"),
            ("h2", "n3", "k3", T0 + 1_000, "expired"),
            ("zz", "n4", "k4", T0 + 1, "unknown"),
            // A fresh token, but the key is enrolled already: nothing changes.
            ("h2", "n5", "k1", T0 + 3, "already"),
        ];
        for (hash, id, key, now, want) in cases {
            let got = match store.enroll(hash, &node(id, key), now).await {
                Ok(e) => {
                    assert_eq!(e.network, "net");
                    assert_eq!(e.site.as_deref(), Some("school"));
                    assert_eq!(e.client_salt.as_deref(), Some("salt-1"));
                    "ok"
                }
                Err(RegistryError::TokenUsed) => "used",
                Err(RegistryError::TokenExpired) => "expired",
                Err(RegistryError::TokenUnknown) => "unknown",
                Err(RegistryError::AlreadyEnrolled) => "already",
                Err(e) => return Err(e.into()),
            };
            assert_eq!(got, want, "{hash} {id}");
        }
        // The failed enrollment left h2 unused.
        let tokens = store.enroll_tokens("net").await?;
        assert_eq!(tokens.len(), 2);
        assert!(tokens.iter().any(|t| t.used_ms.is_none()));

        let keys = store.node_keys().await?;
        assert_eq!(keys.len(), 1);
        assert_eq!(
            (keys[0].node.as_str(), keys[0].site.as_deref()),
            ("n1", Some("school"))
        );
        assert!(matches!(
            store.revoke_node("other", "n1", T0 + 5).await,
            Err(RegistryError::UnknownNode { .. })
        ));
        store.revoke_node("net", "n1", T0 + 5).await?;
        store.revoke_node("net", "n1", T0 + 9).await?;
        assert_eq!(
            store.node_key("n1").await?.unwrap().revoked_ms,
            Some(T0 + 5)
        );
        Ok(())
    })
    .await
}
