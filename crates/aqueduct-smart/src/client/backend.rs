//! Backend services: a client_credentials grant with a `private_key_jwt` assertion (or a
//! client secret when so configured); a public client cannot use it.

use super::{Authorized, SmartClient, SmartConnection, TokenSet};
use crate::error::SmartError;
use crate::scopes::Flow;
use crate::token::{ClientAuth, ClientCredentials, choose_auth_method, token_request};

impl SmartClient {
    /// Backend services: a client_credentials grant with a `private_key_jwt` assertion (or a
    /// client secret when so configured); stores the token.
    pub async fn backend_token(&self, c: &SmartConnection) -> Result<Authorized, SmartError> {
        let r = self.backend_inner(c, None).await;
        self.audited_auth(&c.conn, "backend-token", r).await
    }

    pub(super) async fn backend_inner(
        &self,
        c: &SmartConnection,
        previous: Option<&TokenSet>,
    ) -> Result<Authorized, SmartError> {
        let cfg = self.discovery.get(&c.base_url).await?;
        if !cfg.allows_grant("client_credentials") {
            return Err(SmartError::Unsupported {
                base_url: c.base_url.clone(),
                what: "the client_credentials grant".into(),
            });
        }
        if matches!(c.credentials, ClientCredentials::Public) {
            return Err(SmartError::Config(
                "backend services need a private key or a client secret".into(),
            ));
        }
        let method = choose_auth_method(&c.credentials, c.auth_method, &cfg)?;
        let scopes = c.scopes_for(Flow::Backend, &cfg);
        let form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("scope", scopes.join(" ")),
        ];
        let auth = ClientAuth {
            client_id: &c.client_id,
            creds: &c.credentials,
            method,
        };
        let resp = token_request(&self.http, &cfg, &auth, form).await?;
        self.finish(c, Flow::Backend, scopes, resp, None, previous)
            .await
    }
}
