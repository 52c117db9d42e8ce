"""Pure, Ray-free maskwatch logic: letterboxing, pose decoding, head boxes, tracking, voting, statistics."""
