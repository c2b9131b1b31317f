-- Issue 19 (safety): names unique regardless of case and Unicode form, room owners, closed rooms.
ALTER TABLE users ADD COLUMN name_key TEXT;
-- Names so far were ASCII: lower() is their key. Of accounts that now collide (ALICE beside
-- alice) the oldest keeps the key; the others keep logging in by their exact name.
UPDATE users SET name_key = lower(user_name);
UPDATE users SET name_key = name_key || '#' || id
    WHERE id NOT IN (SELECT min(id) FROM users GROUP BY name_key);
CREATE UNIQUE INDEX users_by_name_key ON users (name_key);

ALTER TABLE room_members ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
UPDATE room_members SET role = 'owner'
    WHERE EXISTS (SELECT 1 FROM rooms r WHERE r.id = room_members.room_id AND r.created_by = room_members.user_id);
-- Rooms whose creator left: their longest-standing member owns them.
UPDATE room_members SET role = 'owner'
    WHERE NOT EXISTS (SELECT 1 FROM room_members o WHERE o.room_id = room_members.room_id AND o.role = 'owner')
      AND user_id = (SELECT m.user_id FROM room_members m WHERE m.room_id = room_members.room_id
                     ORDER BY m.joined_at, m.user_id LIMIT 1);

-- A private room its last member left is closed: nobody can reach it again.
ALTER TABLE rooms ADD COLUMN closed_at BIGINT;
UPDATE rooms SET closed_at = created_at
    WHERE is_private <> 0 AND NOT EXISTS (SELECT 1 FROM room_members m WHERE m.room_id = rooms.id);
