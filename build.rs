// Rebuild when the schema changes: sqlx::migrate! embeds migrations/ and
// src/db/schema.rs embeds sql/ at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=sql");
}
