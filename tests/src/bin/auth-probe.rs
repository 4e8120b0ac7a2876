//! `auth-probe TARGET NAME`: tries one call of each role on the agent at TARGET
//! (`unix:PATH`) and prints, for each, `OK` or the status code it was answered with, as
//! one JSON object. The authorisation tests run it as other local users (`setpriv`): it is
//! a copy of this binary they can execute, wherever the checkout lies.

use agent::proto::{self, agent_api_client::AgentApiClient, config_api_client::ConfigApiClient};

/// `OK`, or the status code's canonical name (`PERMISSION_DENIED`), as grpcio prints it.
fn outcome<T>(r: Result<T, tonic::Status>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(s) => {
            let mut name = String::new();
            for (i, ch) in format!("{:?}", s.code()).chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(ch.to_ascii_uppercase());
            }
            name
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(name)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: auth-probe TARGET NAME");
        std::process::exit(2);
    };
    let out = match agent::client::connect(target, None).await {
        // The kernel refused the connection (the socket's mode): nothing reached the agent.
        Err(e) => {
            eprintln!("{e:#}");
            serde_json::json!({"read": "UNAVAILABLE", "status": "UNAVAILABLE",
                               "config": "UNAVAILABLE", "ports": "UNAVAILABLE"})
        }
        Ok(ch) => {
            let mut c = ConfigApiClient::new(ch.clone());
            let mut a = AgentApiClient::new(ch);
            let read = outcome(
                c.list(proto::ListRequest {
                    r#type: "project".into(),
                    ..Default::default()
                })
                .await,
            );
            let status = outcome(a.status(proto::Empty {}).await);
            let config = outcome(
                c.create(proto::Object {
                    kind: Some(proto::object::Kind::Project(proto::Project {
                        fq_name: vec!["default-domain".into(), name.clone()],
                        ..Default::default()
                    })),
                })
                .await,
            );
            // A port for an interface that does not exist: a caller allowed to plug ports
            // hears NOT_FOUND (or INVALID_ARGUMENT), one who is not, PERMISSION_DENIED.
            let ports = outcome(
                a.add_port(proto::Port {
                    vmi_uuid: "00000000-0000-4000-8000-0000000000aa".into(),
                    device: "packet:nonexistent0".into(),
                    ..Default::default()
                })
                .await,
            );
            serde_json::json!({"read": read, "status": status, "config": config, "ports": ports})
        }
    };
    println!("{out}");
}
