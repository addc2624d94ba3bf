// `sqlx::migrate!` reads `migrations/` when this crate compiles; a new
// migration file must make it compile again.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
