#[path="sip"] pub mod sip { #[path="msg/mod.rs"] pub mod msg; #[path="txn/mod.rs"] pub mod txn; }
