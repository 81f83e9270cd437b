//! Hostile and malformed requests get an HTTP answer, never a crash.

mod common;

use aqueduct_sim::SimConfig;
use common::*;

#[tokio::test]
async fn malformed_requests_are_answered_and_the_server_survives() {
    let sim = start(SimConfig {
        patients: 2,
        resources_per_patient: 40,
        ..SimConfig::default()
    })
    .await;
    let token = system_token(&sim, "system/*.read").await;
    let base = sim.base_url();
    let o = origin(&sim);
    let gets = [
        format!("{base}/Observation?_count=-1"),
        format!("{base}/Observation?_count=99999999999999999999999"),
        format!("{base}/Observation?_getpagesoffset=18446744073709551615&_count=1000"),
        format!("{base}/Observation?_lastUpdated=gt99999999999-01"),
        format!("{base}/Observation?_lastUpdated=gt2147483647"),
        format!("{base}/Observation?_lastUpdated=gt2024-13-45"),
        format!("{base}/Observation?date=ap%E2%82%AC"),
        format!("{base}/Observation?patient=&code=%7C%7C%7C"),
        format!("{base}/Observation?_include=%3A%3A%3A&_revinclude=::"),
        format!("{base}/Observation?_cursor=%%%"),
        format!("{base}/Observation?_cursor=bm90OmEtbnVtYmVy"),
        format!("{base}/Patient/x/_history/not-a-number"),
        format!("{base}/Patient/%00/$everything?_since=yesterday"),
        format!("{base}/bulkfiles/../../etc/passwd"),
        format!("{base}/bulkstatus/"),
        format!("{base}/Binary/"),
        format!("{base}/%E2%82%AC/%E2%82%AC"),
        format!("{o}/oauth2/authorize?client_id=sim-public-app&redirect_uri=javascript:alert(1)"),
        format!(
            "{o}/oauth2/authorize?client_id=sim-public-app&redirect_uri=http://127.0.0.1:1/cb&response_type=code&code_challenge=x&code_challenge_method=S256&scope=patient/%2A.read%20patient/..%20system/x.y"
        ),
        format!("{o}/nowhere"),
    ];
    for url in &gets {
        let r = http().get(url).bearer_auth(&token).send().await.expect(url);
        assert!(r.status().as_u16() >= 200, "{url}");
    }
    let posts: [(String, &str); 6] = [
        (base.clone(), "not json"),
        (
            base.clone(),
            "{\"resourceType\":\"Bundle\",\"type\":\"batch\",\"entry\":[{\"request\":{\"method\":\"GET\",\"url\":\"../../../\"}},{\"request\":{\"method\":\"GET\",\"url\":\"Observation?_count=abc\"}},{}]}",
        ),
        (
            format!("{o}/oauth2/token"),
            "grant_type=client_credentials&client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer&client_assertion=a.b.c",
        ),
        (
            format!("{o}/oauth2/token"),
            "grant_type=authorization_code&code=&client_id=sim-public-app",
        ),
        (format!("{o}/oauth2/token"), "%%%%=%%%"),
        (format!("{o}/oauth2/authorize/decision"), "request_id=nope"),
    ];
    for (url, body) in &posts {
        let r = http()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Basic !!!not-base64")
            .body(body.to_string())
            .send()
            .await
            .expect(url);
        assert!(r.status().as_u16() >= 200, "{url}");
    }
    let r = http()
        .get(format!("{base}/metadata"))
        .send()
        .await
        .expect("alive");
    assert_eq!(r.status(), 200);
}
