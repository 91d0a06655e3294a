use idem_runtime::{defaults, Defaults};

const IDEM: Defaults = defaults!(required, fingerprint(body));

fn main() {}
