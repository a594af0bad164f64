//! TEMPORARY placeholder.
/// EOS.
pub const EOS_TOKEN: u32 = 65535;
