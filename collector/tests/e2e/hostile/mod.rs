//! The `hostile` end-to-end suite: a real collector process attacked the way a client on the
//! same network, or a buggy or rogue agent, would. Each module covers one surface.

mod agents;
mod rest;
mod store;
mod subscribers;
