//! Parse arbitrary bytes as ChannelData and as a stream frame.
#![no_main]

use icebreaker_stun::{stream_frame_len, ChannelData, CHANNEL_MAX, CHANNEL_MIN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = icebreaker_stun::is_channel_data(data);
    if let Ok(cd) = ChannelData::parse(data) {
        assert!((CHANNEL_MIN..=CHANNEL_MAX).contains(&cd.channel));
        assert!(4 + cd.data.len() <= data.len());
    }
    if let Ok(Some(n)) = stream_frame_len(data) {
        assert!(n >= 4);
    }
});
