use idem_runtime::{idempotent, steps::Steps};

#[idempotent(required)]
async fn pay(steps: Steps) -> String {
    let first: String = steps.run("charge", || async { Ok::<_, std::io::Error>("ch_1".to_owned()) }).await.unwrap();
    let second: String = steps.run("charge", || async { Ok::<_, std::io::Error>("ch_2".to_owned()) }).await.unwrap();
    format!("{first}{second}")
}

fn main() {}
