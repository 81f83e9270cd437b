//! EHR launch: the `iss` the EHR sends must be the base URL of one of the organization's
//! connections, otherwise the launch is refused; then the authorization code flow goes on with
//! the `launch` parameter.

use super::{AuthorizationRequest, SmartClient, SmartConnection, same_base};
use crate::error::SmartError;

impl SmartClient {
    /// Starts an EHR launch: `iss` must be the base URL of one of `connections` of
    /// `organization`, otherwise the launch is refused.
    pub async fn begin_ehr_launch(
        &self,
        organization: &str,
        connections: &[SmartConnection],
        iss: &str,
        launch: &str,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, SmartError> {
        let Some(c) = connections
            .iter()
            .find(|c| c.conn.organization == organization && same_base(&c.base_url, iss))
        else {
            tracing::warn!(organization, iss = %iss.chars().take(200).collect::<String>(), "EHR launch from unknown issuer refused");
            return Err(SmartError::UnknownIssuer {
                organization: organization.to_string(),
                iss: iss.chars().take(200).collect(),
            });
        };
        if launch.is_empty() {
            let r = Err(SmartError::InvalidRedirect("empty launch parameter".into()));
            return self.audited(&c.conn, "ehr-launch", r).await;
        }
        let r = self.begin(c, redirect_uri, Some(launch)).await;
        self.audited(&c.conn, "ehr-launch", r).await
    }
}
