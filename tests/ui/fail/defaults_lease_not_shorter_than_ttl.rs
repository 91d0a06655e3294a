use idem_runtime::{defaults, Defaults};

const IDEM: Defaults = defaults!(ttl = "1m", lease = "1m");

fn main() {}
