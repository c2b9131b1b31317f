-- Direct messages, edits and deletes, read markers.
-- A direct conversation is a private room of exactly two members; one per pair of users.
CREATE TABLE direct_conversations (
    room_id BIGINT PRIMARY KEY REFERENCES rooms(id),
    user_low BIGINT NOT NULL REFERENCES users(id),
    user_high BIGINT NOT NULL REFERENCES users(id),
    UNIQUE (user_low, user_high)
);
-- Edits keep the current text and when it last changed; a delete blanks the text and hides it.
ALTER TABLE messages ADD COLUMN edited_at BIGINT;
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
-- How far each member has read each room (the newest message id they saw).
CREATE TABLE read_markers (
    room_id BIGINT NOT NULL REFERENCES rooms(id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    last_read_message_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
