use idem_runtime::{defaults, Defaults};

const IDEM: Defaults = defaults!(requried, ttl = "1h");

fn main() {}
